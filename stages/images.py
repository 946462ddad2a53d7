"""Still-image reading for portraits: EXIF orientation, grayscale / palette / alpha -> RGB,
oversized images scaled down, even sides (yuv420p needs them for the pasted-back video)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np


class ImageError(ValueError):
    """An image file that cannot be read as a picture."""


def read_rgb(path: str | Path, max_side: int | None = None, even: bool = False) -> np.ndarray:
    """Read ``path`` as an ``(H, W, 3)`` uint8 RGB array.

    EXIF orientation is applied; transparent pixels are composited onto white; images whose longer
    side exceeds ``max_side`` are scaled down (Lanczos); ``even`` trims one row / column so both
    sides are even.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path} does not exist or is not a file")
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                img = Image.alpha_composite(canvas, rgba)
            img = img.convert("RGB")
            if max_side and max(img.size) > max_side:
                scale = max_side / max(img.size)
                size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
                img = img.resize(size, Image.Resampling.LANCZOS)
            rgb = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{path.name} is not a readable image ({exc}); "
                         "expected a JPEG, PNG, WebP, BMP or TIFF picture") from exc
    if even:
        rgb = rgb[: rgb.shape[0] // 2 * 2, : rgb.shape[1] // 2 * 2]
    if min(rgb.shape[:2]) < 2:
        raise ImageError(f"{path.name} is only {rgb.shape[1]}x{rgb.shape[0]} pixels")
    return np.ascontiguousarray(rgb)


def pixel_hash(rgb: np.ndarray) -> str:
    """Content hash of decoded pixels (shape included): equal pictures share crops and caches."""
    digest = hashlib.sha256(repr(rgb.shape).encode())
    digest.update(np.ascontiguousarray(rgb).tobytes())
    return digest.hexdigest()[:32]


def write_png(path: str | Path, rgb: np.ndarray) -> None:
    """Write RGB uint8 as PNG atomically (temp name + rename), so a cache file is never partial."""
    import os

    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    Image.fromarray(rgb).save(tmp, format="PNG", compress_level=1)
    os.replace(tmp, path)

"""Still-image reading for portraits (JPEG, PNG, WebP, BMP, TIFF, and HEIC/HEIF when
``pillow-heif`` is installed): EXIF orientation, grayscale / 16-bit / CMYK / palette / alpha ->
8-bit RGB, oversized images scaled down, even sides (yuv420p needs them for the
pasted-back video)."""
from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import numpy as np

#: Smallest picture side accepted (a face must be at least ``face_crop.min_face_px`` wide).
MIN_SIDE = 48


class ImageError(ValueError):
    """An image file that cannot be read as a picture."""


@lru_cache(maxsize=1)
def _register_heif() -> bool:
    """Teach PIL to open HEIC/HEIF phone photos when ``pillow-heif`` is installed."""
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


def read_rgb(path: str | Path, max_side: int | None = None, even: bool = False) -> np.ndarray:
    """Read ``path`` as an ``(H, W, 3)`` uint8 RGB array (see :func:`read_rgb_sized`)."""
    return read_rgb_sized(path, max_side, even)[0]


def read_rgb_sized(path: str | Path, max_side: int | None = None,
                   even: bool = False) -> tuple[np.ndarray, tuple[int, int]]:
    """``(rgb, (width, height) as stored, after EXIF orientation)``.

    EXIF orientation is applied; 16-bit and float grayscale are scaled to 8 bits (PIL's own
    conversion would clip them to white); CMYK, palette and grayscale become RGB; transparent
    pixels are composited onto white; images whose longer side exceeds ``max_side`` are scaled
    down (JPEGs decoded at a reduced scale first, then Lanczos); ``even`` trims one row / column so
    both sides are even.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if "://" in str(path):
        raise ImageError(f"{path} is a URL; only local files are read: download it and give its path")
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path} does not exist or is not a file")
    _register_heif()
    try:
        with Image.open(path) as img:
            if max_side and img.format == "JPEG":
                img.draft("RGB", (max_side, max_side))  # DCT scaling: fast for huge JPEGs
            img.load()
            img = ImageOps.exif_transpose(img)
            size = img.size
            if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
                img = _gray_to_8bit(np.asarray(img))
            if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
                    img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                img = Image.alpha_composite(canvas, rgba)
            img = img.convert("RGB")
            if max_side and max(img.size) > max_side:
                scale = max_side / max(img.size)
                new = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
                img = img.resize(new, Image.Resampling.LANCZOS)
            rgb = np.asarray(img, dtype=np.uint8)
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{path.name} is too large to decode safely ({exc}); "
                         "give a picture of at most about 80 megapixels") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{path.name} is not a readable image ({exc}); "
                         "expected a JPEG, PNG, WebP, HEIC, BMP or TIFF picture") from exc
    if min(rgb.shape[:2]) < MIN_SIDE:
        raise ImageError(f"{path.name} is only {rgb.shape[1]}x{rgb.shape[0]} pixels; give a photo "
                         f"of the presenter at least {MIN_SIDE} pixels on each side")
    if even:
        rgb = rgb[: rgb.shape[0] // 2 * 2, : rgb.shape[1] // 2 * 2]
    return np.ascontiguousarray(rgb), (int(size[0]), int(size[1]))


def _gray_to_8bit(values: np.ndarray):
    """A 16-bit / 32-bit / float grayscale array as an 8-bit PIL image (full range kept)."""
    from PIL import Image

    is_float = values.dtype.kind == "f"
    values = np.nan_to_num(values.astype(np.float64))
    top = float(values.max()) if values.size else 0.0
    if is_float and top <= 1.0 and float(values.min()) >= 0.0:
        scale = 255.0  # float image in [0, 1]
    elif top <= 255.0:
        scale = 1.0
    else:
        scale = 255.0 / 65535.0
    return Image.fromarray(np.clip(values * scale + 0.5, 0, 255).astype(np.uint8), "L")


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

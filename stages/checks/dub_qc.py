"""QC measures of a dub (rows with ``source_video``): how much of it was dubbed, and whether the
rest of each frame is the footage's own.

* ``dubbed_fraction``: frames dubbed / frames (frames whose face was lost, too small or turned
  away pass through; QC warns below ``qc.min_dubbed_fraction``);
* ``outside_psnr_mean`` / ``outside_psnr_min``: PSNR (dB) of the delivered frame against its
  footage frame over the pixels outside the lower-face composite mask
  (:func:`stages.face.mouth_rest.frame_mask`), on up to ``SAMPLES`` frames spread over the clip. Only
  the delivery encoding separates them (about 40 dB and more at the default quality); a low value
  means the picture outside the mouth changed (QC warns below ``qc.outside_psnr_warn``).
* ``dub_thumbnail``: the footage frame and the dubbed frame side by side (``OUT/qc/<id>_dub.jpg``),
  for the report.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from stages.face.mouth_rest import frame_mask
from stages.face.track import FaceTrack
from stages.media.av import iter_video_frames
from stages.media.footage import read_frames

SAMPLES = 24


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two equally shaped pixel arrays (inf when identical)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)) if a.size else 0.0
    return math.inf if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)


def dub_metrics(row: dict[str, Any], clip: Path, qc_dir: Path, feather: float) -> dict[str, Any]:
    """The dub's QC columns (see the module docstring)."""
    record = np.load(row["dub_frames"])
    index, dubbed = record["footage_index"], record["dubbed"]
    n = len(index)
    out: dict[str, Any] = {"dubbed_fraction": round(float(dubbed.mean()) if n else 0.0, 4)}
    track = FaceTrack.load(row["footage_track"])
    picks = sorted(set(np.linspace(0, n - 1, min(SAMPLES, n)).round().astype(int).tolist()))
    delivered, seen = {}, 0
    for chunk in iter_video_frames(clip):
        for j in range(seen, seen + len(chunk)):
            if j in picks:
                delivered[j] = chunk[j - seen].copy()
        seen += len(chunk)
    sources = read_frames(row["source_video"], str(row["source_rate"]), {int(index[j]) for j in delivered})
    values, shown = [], None
    for j, frame in sorted(delivered.items()):
        i = int(index[j])
        src = sources[i][: frame.shape[0], : frame.shape[1]]
        outside = np.ones(frame.shape[:2], bool)
        if dubbed[j]:
            (x0, y0, x1, y1), mask, _ = frame_mask(track.landmarks[i], track.matrices[i], track.size,
                                                   frame.shape, feather)
            outside[y0:y1, x0:x1] = mask <= 0.0
            shown = shown or (src, frame)
        values.append(psnr(frame[outside], src[outside]))
    finite = [v for v in values if math.isfinite(v)] or [99.0]
    out["outside_psnr_mean"] = round(float(np.mean(finite)), 2)
    out["outside_psnr_min"] = round(float(np.min(finite)), 2)
    if shown is not None:
        pair = np.concatenate(shown, axis=1)
        scale = min(1.0, 640 / pair.shape[1])
        image = Image.fromarray(pair)
        if scale < 1:
            image = image.resize((round(pair.shape[1] * scale), round(pair.shape[0] * scale)))
        path = qc_dir / f"{row['clip_id']}_dub.jpg"
        image.save(path, quality=85)
        out["dub_thumbnail"] = str(path)
    return out

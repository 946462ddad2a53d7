"""Identity embedders and CSIM (cosine similarity of identity embeddings).

CSIM between the source portrait's embedding ``e_s`` and an output frame's embedding ``e_t`` is
``cos(e_s, e_t) = e_s . e_t / (|e_s| |e_t|)``. Absolute values depend on the embedder (dlib's
128-d vectors all lie in a narrow cone, so unrelated people still score about 0.85-0.9; ArcFace
models give about 0-0.3 for unrelated people), so every score carries the embedder's ``name`` and
thresholds must be calibrated per embedder (docs/qc.md).

Backends:

* :class:`DlibEmbedder` (default): dlib's 128-d ResNet from ``face-recognition-models`` via
  :mod:`fixtalk.measure.faces` (offline, no download).
* :class:`OnnxArcFaceEmbedder`: an ArcFace-style ONNX model from a user path (onnxruntime), fed a
  112x112 face aligned by a similarity transform of five points (eye centres, nose tip, mouth
  corners) onto the standard ArcFace template.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol

import numpy as np

from fixtalk.geometry import umeyama
from fixtalk.measure.faces import Face, face_embedding

#: The usual ArcFace 112x112 five-point template (x, y): left eye, right eye, nose tip, left and
#: right mouth corner (image left/right).
ARCFACE_TEMPLATE_112 = np.array([
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
], dtype=np.float64)


class MeterUnavailable(RuntimeError):
    """A meter's model cannot be loaded (a missing file or package): not any one clip's fault."""


class Embedder(Protocol):
    """Maps a face in an RGB uint8 image to an identity vector; ``name`` goes into the results."""

    name: str

    def embed(self, image: np.ndarray, face: Face) -> np.ndarray: ...


class DlibEmbedder:
    """dlib's 128-d face-recognition ResNet (``face-recognition-models``)."""

    name = "dlib-resnet128"

    def embed(self, image: np.ndarray, face: Face) -> np.ndarray:
        return face_embedding(image, face)


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """The five ArcFace alignment points from 68 landmarks: eye centres (36-41, 42-47), nose tip
    (30), mouth corners (48, 54). Shape ``(5, 2)``."""
    pts = np.asarray(landmarks, dtype=np.float64)
    return np.stack([pts[36:42].mean(0), pts[42:48].mean(0), pts[30], pts[48], pts[54]])


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity mapping ``src`` onto ``dst``: 2x3 matrix for ``cv2.warpAffine``."""
    return umeyama(src, dst)


def align_112(image: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """The face warped onto the ArcFace template: ``(size, size, 3)`` uint8 RGB."""
    import cv2

    matrix = similarity_transform(five_points(landmarks), ARCFACE_TEMPLATE_112 * (size / 112.0))
    return cv2.warpAffine(np.ascontiguousarray(image[:, :, :3]), matrix, (size, size),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


class OnnxArcFaceEmbedder:
    """An ArcFace-style ONNX recogniser: input ``(1, 3, 112, 112)`` float32 RGB scaled as
    ``(pixel - mean) / std`` (127.5 / 127.5 for InsightFace models), output one embedding."""

    def __init__(self, path: str | Path, *, mean: float = 127.5, std: float = 127.5,
                 threads: int = 1):
        path = Path(path)
        if not path.is_file():
            raise MeterUnavailable(f"qc.onnx_model: {path} does not exist; give the path of an "
                                "ArcFace-style .onnx file (see docs/qc.md) or set qc.embedder=dlib")
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise MeterUnavailable("qc.embedder=onnx needs onnxruntime: `pip install -c "
                                "requirements/constraints.txt onnxruntime`") from exc
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(str(path), opts,
                                                 providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise MeterUnavailable(f"qc.onnx_model: cannot load {path.name} ({exc})") from exc
        inp = self._session.get_inputs()[0]
        self._input = inp.name
        self.size = int(inp.shape[-1]) if isinstance(inp.shape[-1], int) else 112
        self.mean, self.std = float(mean), float(std)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
        self.name = f"onnx:{path.stem}:{digest}"

    def embed(self, image: np.ndarray, face: Face) -> np.ndarray:
        crop = align_112(image, face.landmarks, self.size)
        blob = ((crop.astype(np.float32) - self.mean) / self.std).transpose(2, 0, 1)[None]
        out = self._session.run(None, {self._input: np.ascontiguousarray(blob)})[0]
        return np.asarray(out, dtype=np.float64).reshape(-1)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors (0.0 if either is zero)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    den = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b / den) if den > 0 else 0.0


def csim_stats(scores: np.ndarray, times_s: np.ndarray) -> dict[str, float]:
    """Mean, min, 10th percentile and drift slope (CSIM per second, least squares) of the CSIM
    curve, with ``csim_slope_bound``, the upper end of the slope's 95 % confidence interval
    (slope + 1.96 standard errors): a drift that a few noisy samples of a short clip only seem
    to show stays above the QC limit. NaN entries (no face) are ignored; all NaN when no frame
    scored."""
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(times_s, dtype=np.float64)
    keep = np.isfinite(s)
    if not keep.any():
        nan = float("nan")
        return {"csim_mean": nan, "csim_min": nan, "csim_p10": nan, "csim_slope": nan,
                "csim_slope_bound": nan}
    s, t = s[keep], t[keep]
    slope = bound = 0.0
    if len(s) >= 2 and np.ptp(t) > 0:
        from scipy.stats import linregress

        fit = linregress(t, s)
        slope, bound = float(fit.slope), float(fit.slope + 1.96 * fit.stderr)
    return {"csim_mean": float(s.mean()), "csim_min": float(s.min()),
            "csim_p10": float(np.percentile(s, 10)), "csim_slope": slope, "csim_slope_bound": bound}

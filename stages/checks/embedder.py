"""The QC stage's identity embedder, chosen by ``qc.embedder`` (see docs/qc.md)."""
from __future__ import annotations

from fixtalk.measure.identity import DlibEmbedder, Embedder, MeterUnavailable, OnnxArcFaceEmbedder
from stages.base import SystemicError


def make_embedder(backend: str, onnx_model: str | None = None) -> Embedder:
    """``dlib`` (default) or ``onnx`` (needs ``onnx_model``)."""
    if backend == "dlib":
        return DlibEmbedder()
    if backend == "onnx":
        if not onnx_model:
            raise SystemicError("qc.embedder=onnx needs qc.onnx_model=PATH to an ArcFace-style "
                                ".onnx file (see docs/qc.md)")
        try:
            return OnnxArcFaceEmbedder(onnx_model)
        except MeterUnavailable as exc:
            raise SystemicError(str(exc)) from exc
    raise SystemicError(f"qc.embedder={backend!r} is unknown; expected 'dlib' or 'onnx'")

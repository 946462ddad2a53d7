"""The network as the motion and render stages use it: loaded once per process, on the configured
device, wrapped in :class:`fixtalk.inference.ClipRenderer`.

Loading is memoised per (checkpoint, extras, device), so a bare loop that runs motion and render in
one process holds one copy of the weights; Ray actors each load their own.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from stages.base import ClipError, SystemicError
from stages.config import PipelineConfig


def resolve_device(name: str | None) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; explicit names are checked."""
    import torch

    name = (name or "auto").strip()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemicError(f"model.device={name} but no CUDA device is visible; use auto or cpu")
    if name != "cpu" and not name.startswith("cuda"):
        raise SystemicError(f"model.device={name!r}: expected auto, cpu, cuda or cuda:N")
    return name


class AdaptedWeights:
    """Which weights the (shared) model holds: the checkpoint's own or one portrait's adaptation
    (:mod:`fixtalk.adapt`). One per loaded model, so that stages sharing the model in one process
    (a local run) never disagree about what it holds."""

    def __init__(self, model: Any, checkpoint_id: str):
        self.model, self.checkpoint_id = model, checkpoint_id
        self.active: str | None = None
        self._base: dict | None = None

    def use(self, path: str | None) -> None:
        """Load ``path`` (an adapted checkpoint) or, for None, restore the checkpoint's weights.
        A file that cannot be read or was adapted from another checkpoint is the clip's error."""
        from fixtalk.adapt import apply_adapted

        path = str(path) if path else None
        if path == self.active:
            return
        if self._base is None:
            self._base = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        try:
            apply_adapted(self.model, path, self._base, self.checkpoint_id)
        except Exception as exc:  # noqa: BLE001 - unreadable, truncated or foreign: the clip's error
            apply_adapted(self.model, None, self._base, self.checkpoint_id)
            self.active = None
            raise ClipError(f"cannot use the adapted weights {path}: {exc}; delete the file and rerun "
                            "to adapt again", error_type="AdaptedWeights") from exc
        self.active = path


@dataclass
class Runtime:
    model: Any  # fixtalk.model.FixTalk
    renderer: Any  # fixtalk.inference.ClipRenderer
    device: str
    checkpoint_id: str
    weights: AdaptedWeights

    @property
    def size(self) -> int:
        return int(self.model.cfg.size)

    def use_row_weights(self, row: dict[str, Any]) -> None:
        """The weights a row renders with: its portrait's adaptation (``adapted_checkpoint``, set
        by the adapt stage) or the checkpoint's own."""
        self.weights.use(row.get("adapted_checkpoint") or None)


@lru_cache(maxsize=2)
def _load(checkpoint: str | None, audio2lip: str | None, emotions_dir: str | None,
          device: str) -> tuple[Any, str, AdaptedWeights]:
    import torch

    from fixtalk.checkpoints import checkpoint_id, load_model

    try:
        model = load_model(checkpoint, device=device, dtype=torch.float32, audio2lip=audio2lip,
                           emotions_dir=emotions_dir)
        ident = checkpoint_id(checkpoint)
    except (FileNotFoundError, ValueError, OSError, RuntimeError) as exc:
        raise SystemicError(f"cannot load the model: {exc}") from exc
    return model, ident, AdaptedWeights(model, ident)


def load_runtime(config: PipelineConfig, batch_size: int | None = None) -> Runtime:
    """Model + renderer from ``config.model`` and ``config.render`` (batch size: ``batch_size``,
    else ``render.batch_size``, else the device's default). Systemic errors: a checkpoint that
    cannot load, ``render.precision=float16`` without a CUDA device."""
    from fixtalk.inference import ClipRenderer

    m, r = config.model, config.render
    device = resolve_device(m.device)
    if r.precision == "float16" and not device.startswith("cuda"):
        raise SystemicError(f"render.precision=float16 needs a CUDA device, but the model runs on "
                            f"{device} (model.device={m.device}); set render.precision=bfloat16 "
                            "(CPU autocast) or float32")
    model, ident, weights = _load(m.checkpoint, m.audio2lip, m.emotions_dir, device)
    renderer = ClipRenderer(model, device=device, batch_size=batch_size or r.batch_size,
                            precision=r.precision, relative_flow=r.relative_flow,
                            pixel_warp=r.pixel_warp)
    return Runtime(model=model, renderer=renderer, device=device, checkpoint_id=ident, weights=weights)

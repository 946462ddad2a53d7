"""Learning-rate schedules of a training stage (:class:`fixtalk.config.StageConfig.lr_schedule`).

``constant``: every step at the stage's lr (the trainer's behaviour before schedules existed).
``cosine``: a linear warm-up over ``warmup_steps`` to the stage's lr, then a half cosine down to 0
at the stage's last step (Loshchilov & Hutter, SGDR, ICLR 2017, without restarts). A short run
(portrait adaptation) can take larger steps early and still end on small ones.
"""
from __future__ import annotations

import math

import torch

from fixtalk.config import StageConfig

SCHEDULES = ("constant", "cosine")


def lr_factor(st: StageConfig, step: int) -> float:
    """The multiple of the stage's lr at 0-based ``step``."""
    if st.lr_schedule == "constant":
        return 1.0
    if st.lr_schedule != "cosine":
        raise ValueError(f"stage {st.name!r}: lr_schedule {st.lr_schedule!r} is not one of {SCHEDULES}")
    warm = max(0, int(st.warmup_steps))
    if step < warm:
        return (step + 1) / (warm + 1)
    span = max(1, int(st.steps) - warm)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warm) / span)))


def set_learning_rate(opt: torch.optim.Optimizer, st: StageConfig, step: int) -> None:
    """Set every parameter group's lr to its ``base_lr`` (the stage lr times the group's factor)
    times :func:`lr_factor`; groups without ``base_lr`` keep their lr."""
    k = lr_factor(st, step)
    for group in opt.param_groups:
        if "base_lr" in group:
            group["lr"] = group["base_lr"] * k

"""What data-parallel training needs from its processes, in one object the trainer holds.

:class:`World` is the trainer's view of the workers it trains with: its ``rank`` among ``size``
processes and the few collective steps of a data-parallel step (gradients averaged, one loss
check, one decision). With ``size == 1`` (plain ``fixtalk train``) every method returns at once
without touching ``torch.distributed``, so the single-process trainer and each worker of a
``--workers N`` run execute the same code (:mod:`fixtalk.train.distributed` builds a World of
size N inside Ray Train's process group).

Why gradients are averaged by hand and not by ``DistributedDataParallel``: the stage losses call
the model's parts directly (``model.encode``, ``model.decode``, ...), not ``model.forward``, which
is the only call DDP hooks; each stage freezes a different parameter set; and the R1 penalty is a
double backward, which DDP does not support. One flat all-reduce per optimizer step (gradients of
every trainable parameter, zeros where a worker had none) is what DDP's reducer computes.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class World:
    """``rank`` of this process among ``size``; ``device`` of the collectives' tensors (the
    training device: CPU with gloo, CUDA with NCCL)."""

    rank: int = 0
    size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the run's files (train_state.pt, loss log, model.pt)."""
        return self.rank == 0

    def _dist(self):
        import torch.distributed as dist

        if not dist.is_initialized():
            raise RuntimeError(f"World(size={self.size}) needs an initialised torch.distributed process group")
        return dist

    def average_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Replace each trainable parameter's gradient by its mean over the workers (one flat
        all-reduce). A parameter without a gradient on some worker counts as zero there; one
        without a gradient on every worker keeps ``None`` (the optimizer skips it, as it would in
        a single process)."""
        if self.size == 1:
            return
        params = [p for p in params if p.requires_grad]
        if not params:
            return
        dtype = params[0].dtype  # the trainer keeps every parameter in TrainConfig.dtype
        flags = torch.tensor([p.grad is not None for p in params], dtype=dtype, device=self.device)
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).to(dtype)
                          for p in params] + [flags])
        self._dist().all_reduce(flat)
        grads, present = flat[:-len(params)] / self.size, flat[-len(params):]
        offset = 0
        for p, seen in zip(params, present.tolist()):
            n = p.numel()
            p.grad = grads[offset:offset + n].view_as(p).to(p.dtype) if seen else None
            offset += n

    def all_finite(self, loss: torch.Tensor) -> bool:
        """Whether the loss is finite on every worker (all stop together, none hangs)."""
        bad = torch.tensor([0.0 if bool(torch.isfinite(loss)) else 1.0], device=self.device)
        if self.size > 1:
            self._dist().all_reduce(bad)
        return bool(bad.item() == 0.0)

    def decide(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every worker (clock-based choices: checkpoint due, time budget)."""
        if self.size == 1:
            return bool(flag)
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        self._dist().broadcast(t, src=0)
        return bool(t.item())

    def gather(self, obj: Any) -> list[Any]:
        """Every worker's ``obj`` in rank order (picklable objects; small ones)."""
        if self.size == 1:
            return [obj]
        out: list[Any] = [None] * self.size
        self._dist().all_gather_object(out, obj)
        return out

    def mean_row(self, row: dict) -> dict:
        """A loss-log row whose numbers are averaged over the workers (each over the workers
        that logged it; non-numbers are rank 0's)."""
        if self.size == 1:
            return row
        rows = self.gather(row)
        out = {}
        for key in dict.fromkeys(k for r in rows for k in r):
            vals = [r[key] for r in rows if key in r]
            numeric = all(isinstance(v, float) for v in vals)
            out[key] = sum(vals) / len(vals) if numeric else rows[0].get(key, vals[0])
        return out

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Rank 0's parameters and buffers on every worker (one starting point for all)."""
        if self.size == 1:
            return
        dist = self._dist()
        with torch.no_grad():
            for t in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(t.data, src=0)

    def barrier(self) -> None:
        if self.size > 1:
            self._dist().barrier()


SINGLE = World()


def batch_denominator(den: torch.Tensor) -> torch.Tensor:
    """The normaliser of a batch-level ratio (a masked mean: sum of weighted errors over the batch
    / sum of the weights) as each worker must use it: the mean over the workers of their ``den``
    (no gradient). Each worker's ``num / batch_denominator(den)``, averaged over the workers as the
    gradients and logged losses are, is then the ratio over the whole global batch, so masked
    terms do not depend on the number of workers. In one process it returns ``den`` itself."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
        return den
    total = den.detach().clone()
    dist.all_reduce(total)
    return total / dist.get_world_size()

"""BatchNorm over the global batch of a data-parallel run, on CPU (gloo) and CUDA (NCCL) alike.

The only BatchNorm layers are Audio2Lip's (trained in the audio2lip stage in train mode). Left
alone, each worker would normalise by the statistics of its own share and learn its own running
statistics; ``torch.nn.SyncBatchNorm`` fixes that on GPUs only (it refuses CPU tensors). Here a
training-mode forward sums each channel's count, sum and squared deviations over the workers
with a differentiable all-reduce (:class:`_SumOverWorkers`; two passes: the mean, then the
variance around it), so every worker normalises by the statistics of the whole global batch,
gradients flow through them as in one process, and the running statistics are the same on every
worker (they match a single-process run with the same global batch, to float rounding).
:func:`use_global_batchnorm` switches a model's BatchNorm2d layers in place (same parameters,
buffers and state-dict keys); eval mode is plain BatchNorm.
"""
from __future__ import annotations

import torch


class _SumOverWorkers(torch.autograd.Function):
    """Sum of a tensor over the workers; its gradient is the sum of the workers' gradients (each
    worker's loss depends on every worker's statistics)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def all_reduce(x: torch.Tensor) -> torch.Tensor:
    return _SumOverWorkers.apply(x)


class GlobalBatchNorm2d(torch.nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the batch summed over all workers."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        if not self.training or not dist.is_initialized() or dist.get_world_size() == 1:
            return super().forward(x)
        dtype = x.dtype  # statistics in float32 at least (bf16 activations under autocast)
        x = x.float() if dtype in (torch.float16, torch.bfloat16) else x
        dims = (0, 2, 3)
        count = all_reduce(torch.tensor([float(x.numel() // x.shape[1])], device=x.device))
        mean = all_reduce(x.sum(dims)) / count
        centred = x - mean[None, :, None, None]
        var = all_reduce(centred.pow(2).sum(dims)) / count
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                n = float(count.item())
                self.running_mean.mul_(1 - m).add_(m * mean.detach())
                self.running_var.mul_(1 - m).add_(m * var.detach() * n / max(n - 1.0, 1.0))
        out = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            out = out * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return out.to(dtype)


def use_global_batchnorm(model: torch.nn.Module) -> int:
    """Turn every ``BatchNorm2d`` of ``model`` into :class:`GlobalBatchNorm2d` in place; returns
    how many layers changed."""
    n = 0
    for m in model.modules():
        if type(m) is torch.nn.BatchNorm2d:
            m.__class__ = GlobalBatchNorm2d
            n += 1
    return n


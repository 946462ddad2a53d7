"""Each worker's share of every global batch.

:class:`RankBatchSampler` draws the global batches exactly as a shuffled ``DataLoader`` with
``drop_last`` does (``RandomSampler`` + ``BatchSampler`` on the same generator), then hands
worker ``rank`` of ``size`` the items ``rank, rank + size, ...`` of each batch. With one worker
that is the plain shuffled loader, item for item; with N workers the union of their shares is the
single-process batch, so a stage's ``batch_size`` means the same (global) batch on any number of
workers. The rank-strided split keeps two batch-level choices of the trainer shard-invariant:
the lip_pose partner (half a batch away, :func:`fixtalk.train.stage_steps.partner`) and the
discriminator's strided minibatch-stddev groups (when the group equals the per-worker batch).
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import BatchSampler, RandomSampler, Sampler


def local_batch_size(global_batch: int, workers: int, stage: str = "") -> int:
    """Items per worker of a ``global_batch``; refuses a batch that does not split evenly."""
    if global_batch % workers:
        raise ValueError(f"stage {stage!r}: batch_size {global_batch} (the global batch) must be a multiple "
                         f"of the number of workers ({workers})")
    return global_batch // workers


class RankBatchSampler(Sampler[list[int]]):
    """Indices of worker ``rank``'s share of each shuffled global batch of ``batch_size``."""

    def __init__(self, num_items: int, batch_size: int, generator: torch.Generator,
                 rank: int = 0, size: int = 1) -> None:
        local_batch_size(batch_size, size)
        self.batches = BatchSampler(RandomSampler(range(num_items), generator=generator), batch_size,
                                    drop_last=True)
        self.rank, self.size = rank, size

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            yield batch[self.rank::self.size]

    def __len__(self) -> int:
        return len(self.batches)

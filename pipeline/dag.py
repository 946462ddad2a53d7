"""Wiring of the stages: Ray Data (one ``map_batches`` actor pool per stage) or one local process.

The DAG knows nothing of what a stage does; it reads each stage's ``resources`` from config:

    ray.data.from_pandas([one frame per block])
      .map_batches(SpeechStage, compute=ActorPoolStrategy(size=pool), num_cpus=.., num_gpus=..,
                   batch_size=.., fn_constructor_kwargs={"config": cfg}, batch_format="pandas")
      .map_batches(IngestStage, ...) ... .map_batches(QCStage, ...)
      .iter_batches(batch_size=None)   # streamed: each finished block reaches the driver at once

Rows carry paths and small metadata only; frames never enter Ray. Per-clip problems are rows with
``status="failed"``; any exception out of a stage is systemic and stops the run
(``DataContext.max_errored_blocks = 0``).
"""
from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import pandas as pd

from pipeline.config import PipelineConfig, Resources
from pipeline.node_watch import watch_nodes
from stages import STAGE_CLASSES, STAGE_ORDER

log = logging.getLogger(__name__)

def _spec(entry: str) -> tuple[str, str]:
    """``name`` of a built-in stage, or ``module:Class`` of a custom one -> (module, class)."""
    if ":" in entry:
        module, attr = entry.split(":", 1)
        return module, attr
    if entry not in STAGE_CLASSES:
        raise ValueError(f"run.stages: unknown stage {entry!r}; known: {', '.join(STAGE_ORDER)} "
                         "(or module:Class for a custom stage)")
    return STAGE_CLASSES[entry]


def _enabled(cfg: PipelineConfig, entry: str) -> bool:
    section = getattr(cfg, entry, None) if ":" not in entry else None
    on = getattr(section, "enabled", True)
    if on is None:  # "auto" (adapt.enabled): only for the shipped default model, where it was evaluated
        from fixtalk.checkpoints import DEFAULT_CHECKPOINT

        ckpt = cfg.model.checkpoint
        return ckpt is None or Path(ckpt).resolve() == DEFAULT_CHECKPOINT.resolve()
    return bool(on)


def enabled_stage_names(cfg: PipelineConfig) -> list[str]:
    """Stage entries in order, minus the ones switched off (``align.enabled``, ``qc.enabled``).
    ``run.stages`` may list built-in names and ``module:Class`` custom stages."""
    entries = list(cfg.run.stages) if cfg.run.stages else list(STAGE_ORDER)
    for entry in entries:
        _spec(entry)
    return [e if ":" not in e else e.rsplit(":", 1)[1] for e in entries if _enabled(cfg, e)]


def load_stage_classes(cfg: PipelineConfig) -> list[type]:
    """Import the configured stage classes (an ``ImportError`` here is a systemic fault)."""
    entries = list(cfg.run.stages) if cfg.run.stages else list(STAGE_ORDER)
    classes = []
    for entry in entries:
        if _enabled(cfg, entry):
            module, attr = _spec(entry)
            classes.append(getattr(importlib.import_module(module), attr))
    return classes


def section_resources(cfg: PipelineConfig, stage_name: str) -> Resources:
    section = getattr(cfg, stage_name, None)
    res = getattr(section, "resources", None)
    return res if isinstance(res, Resources) else Resources()


# ------------------------------------------------------------------------------------ local run

def iter_local(stages: Sequence[Any], df: pd.DataFrame, batch_size: int = 1) -> Iterator[pd.DataFrame]:
    """Chain stage objects in this process, ``batch_size`` rows at a time, yielding each finished
    batch (same semantics as the Ray DAG; no pipelining)."""
    step = max(1, int(batch_size))
    for start in range(0, len(df), step):
        batch = df.iloc[start:start + step].reset_index(drop=True)
        for stage in stages:
            batch = stage(batch)
        yield batch


def run_local(stages: Sequence[Any], df: pd.DataFrame, batch_size: int = 1) -> pd.DataFrame:
    """All rows through the stage objects in one process; one result row per input row."""
    parts = list(iter_local(stages, df, batch_size))
    return pd.concat(parts, ignore_index=True, sort=False) if parts else df.iloc[0:0]


# -------------------------------------------------------------------------------------- Ray run

@dataclass
class StagePlan:
    """What one ``map_batches`` call asks Ray for."""

    cls: type
    name: str
    num_cpus: float
    num_gpus: float
    batch_size: int
    pool_size: int
    max_tasks_in_flight: int | None
    memory: int | None = None  # bytes reserved per actor


def plan_stages(classes: Sequence[type], cfg: PipelineConfig, cluster: dict[str, float]) -> list[StagePlan]:
    """Per-stage resources from config, fitted to the cluster.

    * render and adapt take ``num_gpus=1`` (or the configured amount) when the cluster has GPUs, else 0;
      other stages get their configured GPU share only when GPUs exist.
    * ``memory_gib`` (adapt: 1.5, what a fine-tuning actor holds) becomes Ray's ``memory``
      reservation, unless the cluster has less, so that such an actor is never unschedulable.
    * When the pools' CPU requests add up to more than the cluster has (8 stages on a 2-core
      laptop), every request is scaled down by the same factor so that all pools can start;
      requests are scheduling tokens, the processes still share the cores.
    """
    has_gpu = cluster.get("GPU", 0) > 0
    plans = []
    for cls in classes:
        name = getattr(cls, "name", cls.__name__)
        res = section_resources(cfg, name)
        gpus = float(res.num_gpus) if has_gpu else 0.0
        if name in ("render", "adapt") and has_gpu and gpus == 0:
            gpus = 1.0
        memory = int(res.memory_gib * 2**30) if res.memory_gib else None
        if memory and memory * max(1, int(res.pool_size)) > cluster.get("memory", float("inf")):
            log.info("stage %s: memory request dropped (the cluster has %.1f GiB)", name,
                     cluster["memory"] / 2**30)
            memory = None
        plans.append(StagePlan(cls, name, float(res.num_cpus), gpus, max(1, int(res.batch_size)),
                               max(1, int(res.pool_size)), res.max_tasks_in_flight, memory))
    cpus = float(cluster.get("CPU", 1.0))
    wanted = sum(p.num_cpus * p.pool_size for p in plans)
    budget = 0.9 * cpus
    if wanted > budget > 0:
        factor = budget / wanted
        for p in plans:
            p.num_cpus = round(max(0.01, p.num_cpus * factor), 3)
        log.info("stage CPU requests (%.1f) exceed the cluster's %.1f CPUs; scaled by %.2f", wanted, cpus, factor)
    return plans


def build_dataset(df: pd.DataFrame, plans: Sequence[StagePlan], cfg: PipelineConfig, block_rows: int = 1):
    """The lazy Ray dataset: one block per ``block_rows`` rows, one actor pool per stage."""
    import ray.data

    step = max(1, int(block_rows))
    # from_items builds the input blocks in the driver (ray.put); from_pandas would run one remote
    # task per block, which waits forever when earlier actors still hold every CPU.
    ds = ray.data.from_items(df.to_dict("records"), override_num_blocks=-(-len(df) // step))
    for p in plans:
        strategy = ray.data.ActorPoolStrategy(size=p.pool_size, max_tasks_in_flight_per_actor=p.max_tasks_in_flight)
        ds = ds.map_batches(
            p.cls,
            fn_constructor_kwargs={"config": cfg},
            compute=strategy,
            num_cpus=p.num_cpus,
            num_gpus=p.num_gpus,
            **({"memory": p.memory} if p.memory else {}),
            batch_size=p.batch_size,
            batch_format="pandas",
            udf_modifying_row_count=False,
        )
    return ds


def configure_data_context(progress_bars: bool = False, no_progress_timeout_s: float = -1.0) -> None:
    """Systemic errors stop the run; our own progress bar replaces Ray's; Ray's no-progress
    timeout is ``run.no_progress_timeout_s`` (-1: none; stages such as a CPU portrait
    adaptation may emit nothing for longer than Ray's default 30 minutes)."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.max_errored_blocks = 0
    ctx.execution_no_progress_timeout_s = float(no_progress_timeout_s)
    ctx.enable_progress_bars = progress_bars
    ctx.execution_options.preserve_order = False
    ctx.print_on_execution_start = False


def iter_ray(df: pd.DataFrame, classes: Sequence[type], cfg: PipelineConfig) -> Iterator[pd.DataFrame]:
    """Run ``df`` through the Ray DAG (Ray must be initialised), yielding finished blocks as they
    arrive. Exceptions from stages propagate (systemic)."""
    import ray

    if len(df) == 0:
        return
    configure_data_context(no_progress_timeout_s=cfg.run.no_progress_timeout_s)
    plans = plan_stages(classes, cfg, ray.cluster_resources())
    for p in plans:
        log.info("stage %-9s pool=%d cpus=%.3g gpus=%.3g batch=%d", p.name, p.pool_size, p.num_cpus, p.num_gpus, p.batch_size)
    ds = build_dataset(df, plans, cfg, cfg.run.block_rows)
    # The caller (pipeline.run) collects garbage after the run so the stage actors are released.
    batches = ds.iter_batches(batch_size=None, batch_format="pandas", prefetch_batches=0)
    yield from watch_nodes(batches, cfg.run.node_loss_grace_s)

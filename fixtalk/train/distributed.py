"""``fixtalk train --workers N``: the trainer, data-parallel on Ray Train.

:func:`train_distributed` starts (or joins, ``--address``) a Ray cluster and runs a
``ray.train.torch.TorchTrainer`` with N workers; Ray Train sets up the torch process group
(gloo on CPU, NCCL when each worker has a GPU). Every worker runs :func:`_worker_loop`, which
builds the same :class:`~fixtalk.train.trainer.Trainer` as plain ``fixtalk train`` with a
:class:`~fixtalk.train.collective.World` of size N, so every stage, loss and the GAN with its R1
term run as in one process: each worker takes its share of each global batch, gradients
(generator and discriminator) are averaged, rank 0 writes ``OUT/train_state.pt`` (atomically),
the one loss log (losses averaged over the workers) and ``OUT/model.pt``.

Resume: ``OUT/train_state.pt`` is the checkpoint. A lost worker (process or node) makes Ray Train
restart the worker group (``FailureConfig(max_failures)``); the new workers resume from the last
checkpoint. A killed driver: rerun the same command. Ray Train keeps its own run records under
``OUT/ray/`` (``RunConfig(storage_path)``). ``OUT`` and the data must be a local folder (one node)
or a file system every node mounts at the same path: each worker checks it sees the folder rank 0
writes to, and the run stops with a message if not. Rank and process id of each worker are in
``OUT/workers/rank<r>.json``.

This module is the only part of :mod:`fixtalk` that imports Ray (lazily), as ``fixtalk train``
is the only command of :mod:`fixtalk` that starts processes.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import uuid
from dataclasses import asdict
from pathlib import Path

from fixtalk.config import DistributedConfig, StageConfig, TrainConfig
from fixtalk.train.trainer import STATE_FILE

RAY_DIR = "ray"
STATUS_FILE = "run_status.json"  # rank 0's last word: {"finished", "global_step", "stage_index"}
WORKERS_DIR = "workers"


def _check_shared(out: Path, token: str, world) -> None:
    """Stop with a clear message unless every worker sees the file rank 0 wrote under ``out``."""
    marker = out / f".shared-{token}"
    if world.is_main:
        out.mkdir(parents=True, exist_ok=True)
        marker.write_text(token)
    world.barrier()
    seen = world.gather((socket.gethostname(), marker.is_file()))
    world.barrier()
    if world.is_main:
        marker.unlink(missing_ok=True)
    blind = [f"rank {r} on {host}" for r, (host, ok) in enumerate(seen) if not ok]
    if blind:
        raise RuntimeError(f"--out {out} is not shared: {', '.join(blind)} cannot see what rank 0 writes "
                           "there; use a file system every node mounts at the same path (NFS, EFS, ...)")


def _record_worker(out: Path, world, device: str) -> None:
    folder = out / WORKERS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    info = {"rank": world.rank, "workers": world.size, "pid": os.getpid(),
            "host": socket.gethostname(), "device": device}
    # written whole (a reader, e.g. a supervisor polling the pids, never sees a half-written file)
    path = folder / f"rank{world.rank}.json"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, path)


def _say(line: str) -> None:
    """Rank 0's progress line, once: straight to the process's stdout, which Ray forwards to the
    driver (Ray Train's patched ``print`` would emit it a second time through its logger)."""
    print(line, file=sys.__stdout__, flush=True)


def _worker_loop(config: dict) -> None:
    """One Ray Train worker: the trainer of a World of ``get_world_size()`` processes."""
    import ray.train
    import torch

    from fixtalk.train.cli import make_trainer
    from fixtalk.train.collective import World

    ctx = ray.train.get_context()
    cfg = TrainConfig(**{**config["train"], "stages": [StageConfig(**s) for s in config["train"]["stages"]]})
    if config["gpus"]:
        import ray.train.torch

        device = ray.train.torch.get_device()
        torch.cuda.set_device(device)  # NCCL's object collectives use the current device
        cfg.device = str(device)
    else:
        device = torch.device("cpu")
        cfg.device = "cpu"
    world = World(rank=ctx.get_world_rank(), size=ctx.get_world_size(), device=device)
    out = Path(config["out"])
    _check_shared(out, config["token"], world)
    _record_worker(out, world, cfg.device)
    log = _say if world.is_main else (lambda s: None)
    status: dict = {"finished": False}
    trainer = None
    try:
        trainer = make_trainer(cfg, config["data"], out, config["init"], world=world, log=log)
        trainer.run()
        status["finished"] = True
    except TimeoutError as e:  # the run's own time budget: a clean stop, not a worker failure
        log(f"stopped: {e}")
    except (FloatingPointError, ValueError) as e:  # every worker alike: a restart would only repeat it
        status["error"] = [type(e).__name__, str(e)]
    if world.is_main:
        if trainer is not None:
            status.update(global_step=trainer.global_step, stage_index=trainer.stage_index)
        (out / STATUS_FILE).write_text(json.dumps(status))


def _connect(dist: DistributedConfig) -> None:
    import ray

    if ray.is_initialized():
        return
    if dist.address:
        ray.init(address=dist.address)
        return
    need = dist.workers * dist.cpus_per_worker
    ray.init(address="local", num_cpus=max(int(need + 0.999), os.cpu_count() or 1),
             include_dashboard=False)


def train_distributed(cfg: TrainConfig, dist: DistributedConfig, data: str | Path, out: str | Path,
                      init: str | None = None) -> Path:
    """Train ``cfg`` on ``dist.workers`` Ray Train workers; returns ``OUT/model.pt``. Raises
    TimeoutError when the run's time budget stopped it (rerun to continue), and the workers'
    FloatingPointError (a non-finite loss) or ValueError (a config the trainer refuses) as they
    raised it, without the restarts meant for lost workers."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    out, data = Path(out).resolve(), Path(data).resolve()
    init = str(Path(init).resolve()) if init else None  # the workers' working folder is not ours
    out.mkdir(parents=True, exist_ok=True)
    for st in cfg.stages:
        if st.batch_size % dist.workers:
            raise ValueError(f"stage {st.name!r}: batch_size {st.batch_size} (the global batch) must be a "
                             f"multiple of --workers {dist.workers}")
    _connect(dist)
    use_gpu = dist.gpus_per_worker > 0
    resources = {"CPU": dist.cpus_per_worker, **({"GPU": dist.gpus_per_worker} if use_gpu else {}),
                 **dist.resources}
    config = {"train": asdict(cfg), "data": str(data), "out": str(out), "init": init,
              "gpus": use_gpu, "token": uuid.uuid4().hex}
    trainer = TorchTrainer(
        _worker_loop, train_loop_config=config,
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=dist.workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=RunConfig(name="train", storage_path=str(out / RAY_DIR),
                             failure_config=FailureConfig(max_failures=dist.max_failures)))
    (out / STATUS_FILE).unlink(missing_ok=True)
    trainer.fit()
    status = json.loads((out / STATUS_FILE).read_text()) if (out / STATUS_FILE).is_file() else {}
    if status.get("error"):
        kind, message = status["error"]
        raise (FloatingPointError if kind == "FloatingPointError" else ValueError)(message)
    if not status.get("finished", False):
        raise TimeoutError(f"training stopped at global step {status.get('global_step')} "
                           f"(time budget; {out / STATE_FILE} holds the position); rerun the same command "
                           "to continue")
    return out / "model.pt"

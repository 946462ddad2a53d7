"""``fixtalk train`` and ``fixtalk data ...`` (the console script dispatches here).

    fixtalk train --config configs/train_default.yaml --data DATA --out RUN [--device cpu]
                  [--max-minutes M] [--init CKPT|EDTalk.pt]
                  [--workers N [--gpus-per-worker G] [--cpus-per-worker C] [--address auto]
                   [--max-failures F] [--worker-resource NAME=AMOUNT]]
    fixtalk data prepare VIDEO_DIR OUT [--size 128] [--segment 10] [--min-seconds 1]
                         [--split train] [--licence TEXT] [--num-cpus 1] [--address ADDR]
    fixtalk data synthetic OUT [--clips 40] [--eval-clips 5] [--size 128] [--seed 0] [--portraits DIR] [--reshape P]

Rerunning ``fixtalk train`` with the same ``--out`` resumes from ``RUN/train_state.pt``.
``--workers N`` (N > 1) or ``--address`` trains data-parallel on Ray Train
(:mod:`fixtalk.train.distributed`); without them the trainer runs in this process.
The ``fixtalk`` command runs ``data prepare`` as a Ray Data job (``pipeline.data_prepare``, one
task per video, local or ``--address``); ``python -m fixtalk.train.cli data prepare`` runs the same
per-video worker in this one process, without Ray (docs/data_preparation.md).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

import yaml

from fixtalk.config import DistributedConfig, PrepareConfig, StageConfig, TrainConfig


def load_train_config(path: str | Path | None) -> TrainConfig:
    """TrainConfig from YAML: top-level TrainConfig fields, ``stages`` a list of StageConfig dicts."""
    if path is None:
        return TrainConfig()
    raw = yaml.safe_load(Path(path).read_text()) or {}
    known = {f.name for f in fields(TrainConfig)}
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"{path}: unknown train settings {sorted(unknown)}; known: {sorted(known)}")
    stage_fields = {f.name for f in fields(StageConfig)}
    stages = []
    for i, s in enumerate(raw.pop("stages", None) or []):
        bad = set(s) - stage_fields
        if bad:
            raise ValueError(f"{path}: stages[{i}] has unknown keys {sorted(bad)}; known: {sorted(stage_fields)}")
        stages.append(StageConfig(**s))
    cfg = TrainConfig(**raw)
    if stages:
        cfg.stages = stages
    return cfg


def init_weights(model, path: str, preset: str) -> str:
    """Seed a fresh run's model from a FixTalk checkpoint of the same architecture (fine-tuning,
    a further training phase) or from EDTalk.pt / EDTalk_lip_pose.pt (its generator, copied level
    by level into the run's model, preset and ``model:`` overrides alike; EMI/EDI stay fresh)."""
    from fixtalk.checkpoints import _torch_load, detect_layout, load_model
    from fixtalk.transfer import seed_from_edtalk

    if detect_layout(_torch_load(path)) == "fixtalk":
        src = load_model(path)
        if src.cfg != model.cfg:
            raise ValueError(f"--init {path}: its model config ({src.cfg.name}, size {src.cfg.size}) "
                             f"differs from the run's preset {preset!r}; use a checkpoint of that preset")
        model.load_state_dict(src.state_dict())
        return f"initialised from {path} (all weights)"
    report = seed_from_edtalk(model, path)
    fresh = sorted({k.split(".")[0] for k in report["fresh"]})
    return (f"initialised from {path}: {len(report['loaded'])} generator tensors loaded, "
            f"{len(report['fresh'])} fresh ({', '.join(fresh) or 'none'})")


def make_trainer(cfg: TrainConfig, data: str | Path, out: str | Path, init: str | None = None,
                 world=None, log=print):
    """The Trainer of a run (resumed when ``out`` has a train_state.pt), its model seeded from
    ``init`` on a fresh start; the same for ``fixtalk train`` and each worker of a ``--workers``
    run (where every worker starts from rank 0's weights)."""
    from fixtalk.train.collective import SINGLE
    from fixtalk.train.trainer import Trainer

    world = world or SINGLE
    trainer = Trainer(cfg, data, out, log=log, world=world)
    if init and trainer.global_step == 0:
        log(init_weights(trainer.model, init, cfg.preset))
    world.broadcast_module(trainer.model)
    return trainer


def distributed_config(args: argparse.Namespace) -> DistributedConfig | None:
    """The ``--workers``/``--address`` settings, or None for a run in this process."""
    resources = {}
    for item in args.worker_resource:
        name, sep, amount = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--worker-resource {item!r}: expected NAME=AMOUNT, e.g. gpu_train=1")
        resources[name] = float(amount)
    dist = DistributedConfig(workers=args.workers, gpus_per_worker=args.gpus_per_worker,
                             cpus_per_worker=args.cpus_per_worker, address=args.address or "",
                             max_failures=args.max_failures, resources=resources)
    if dist.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {dist.workers}")
    return dist if dist.workers > 1 or dist.address else None


def _train(args: argparse.Namespace) -> int:
    cfg = load_train_config(args.config)
    if args.device:
        cfg.device = args.device
    if args.max_minutes is not None:
        cfg.max_minutes = args.max_minutes
    dist = distributed_config(args)
    try:
        if dist is not None:
            from fixtalk.train.distributed import train_distributed

            train_distributed(cfg, dist, args.data, args.out, init=args.init)
        else:
            make_trainer(cfg, args.data, args.out, args.init).run()
    except TimeoutError as e:
        print(f"stopped: {e}", file=sys.stderr)
        return 75
    return 0


def prepare_config(args: argparse.Namespace) -> PrepareConfig:
    """The PrepareConfig of ``fixtalk data prepare`` arguments."""
    return PrepareConfig(size=args.size, segment=args.segment, min_seconds=args.min_seconds,
                         split=args.split, licence=args.licence, num_cpus=args.num_cpus)


def _data(args: argparse.Namespace) -> int:
    if args.data_cmd == "prepare":
        from fixtalk.train.prepare_job import run_job
        from fixtalk.train.prepare_records import UsageError

        if args.address:
            print("fixtalk data prepare: --address joins a Ray cluster: run the `fixtalk` command "
                  "(python -m pipeline.cli), not python -m fixtalk.train.cli", file=sys.stderr)
            return 2
        try:
            return run_job(args.video_dir, args.out, prepare_config(args)).exit_code
        except UsageError as exc:
            print(f"fixtalk data prepare: {exc}", file=sys.stderr)
            return 2
    from fixtalk.train import synthetic

    argv = [str(args.out), "--clips", str(args.clips), "--eval-clips", str(args.eval_clips),
            "--size", str(args.size), "--seed", str(args.seed)]
    if args.portraits:
        argv += ["--portraits", str(args.portraits)]
    if args.reshape:
        argv += ["--reshape", str(args.reshape)]
    return synthetic.main(argv)


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(prog="fixtalk")
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train a FixTalk model (resumes when OUT has a train_state.pt)")
    t.add_argument("--config", help="YAML TrainConfig (default: the built-in TrainConfig)")
    t.add_argument("--data", required=True, help="folder of training clips (fixtalk data prepare/synthetic)")
    t.add_argument("--out", required=True, help="run folder: train_state.pt, model.pt, loss_log.csv/png")
    t.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    t.add_argument("--max-minutes", type=float, help="stop (resumably) after this wall time")
    t.add_argument("--init", help="FixTalk checkpoint of the same preset (all weights) or EDTalk.pt / "
                                  "EDTalk_lip_pose.pt (generator) to start a new run from")
    t.add_argument("--workers", type=int, default=1,
                   help="data-parallel workers on Ray Train (default 1: train in this process)")
    t.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs of each worker (0: CPU, gloo)")
    t.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs Ray reserves for each worker")
    t.add_argument("--address", help="train on a running Ray cluster ('auto' or host:port); OUT and "
                                     "DATA must then be on a file system every node mounts")
    t.add_argument("--max-failures", type=int, default=2,
                   help="restarts after a lost worker, each from the last checkpoint (default 2)")
    t.add_argument("--worker-resource", action="append", default=[], metavar="NAME=AMOUNT",
                   help="a custom Ray resource each worker needs, e.g. gpu_train=1 (cluster.yaml's training "
                        "node type); repeatable")
    t.set_defaults(func=_train)
    d = sub.add_parser("data", help="build training data")
    dsub = d.add_subparsers(dest="data_cmd", required=True)
    pr = dsub.add_parser("prepare", help="videos (HDTF/MEAD/VFHQ style) -> training clips "
                                         "(a Ray Data job: one task per video; reruns resume)")
    pr.add_argument("video_dir", help="folder of talking-face videos (searched recursively)")
    pr.add_argument("out", help="folder of clip folders, OUT/_videos done-records, OUT/prepare_summary.*")
    pr.add_argument("--size", type=int, default=PrepareConfig.size, help="crop size in pixels")
    pr.add_argument("--segment", type=float, default=PrepareConfig.segment,
                    help="seconds per clip (0: one clip per shot)")
    pr.add_argument("--min-seconds", type=float, default=PrepareConfig.min_seconds,
                    help="shots shorter than this are dropped (too_short)")
    pr.add_argument("--split", default=PrepareConfig.split, help="split written into every clip's meta.json")
    pr.add_argument("--licence", default=PrepareConfig.licence, help="licence of the videos, into meta.json")
    pr.add_argument("--num-cpus", type=float, default=PrepareConfig.num_cpus, help="Ray CPUs per video task")
    pr.add_argument("--address", help="join a running Ray cluster ('auto' or host:port) instead of starting "
                                      "one; VIDEO_DIR and OUT must then be on storage every node mounts")
    sy = dsub.add_parser("synthetic", help="offline self-driven clips from shipped portraits")
    sy.add_argument("out")
    sy.add_argument("--clips", type=int, default=40)
    sy.add_argument("--eval-clips", type=int, default=5)
    sy.add_argument("--size", type=int, default=128)
    sy.add_argument("--seed", type=int, default=0)
    sy.add_argument("--portraits", help="folder of further training portraits (images you hold the rights to)")
    sy.add_argument("--reshape", type=float, default=0.0,
                    help="fraction of training clips whose face gets a new random geometry (default 0)")
    for sp in (pr, sy):
        sp.set_defaults(func=_data)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

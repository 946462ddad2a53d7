"""``fixtalk train`` and ``fixtalk data ...`` (the console script dispatches here).

    fixtalk train --config configs/train_default.yaml --data DATA --out RUN [--device cpu]
                  [--max-minutes M] [--init CKPT|EDTalk.pt]
    fixtalk data prepare VIDEO_DIR OUT [--size 128] [--segment 10] [--min-seconds 1]
                         [--split train] [--licence TEXT] [--num-cpus 1] [--address ADDR]
    fixtalk data synthetic OUT [--clips 40] [--eval-clips 5] [--size 128] [--seed 0] [--portraits DIR] [--reshape P]

Rerunning ``fixtalk train`` with the same ``--out`` resumes from ``RUN/train_state.pt``.
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

from fixtalk.config import PrepareConfig, StageConfig, TrainConfig


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
    a further training phase) or from EDTalk.pt / EDTalk_lip_pose.pt (generator only)."""
    from fixtalk.checkpoints import _torch_load, detect_layout, init_fixtalk_from_edtalk, load_model

    if detect_layout(_torch_load(path)) == "fixtalk":
        src = load_model(path)
        if src.cfg != model.cfg:
            raise ValueError(f"--init {path}: its model config ({src.cfg.name}, size {src.cfg.size}) "
                             f"differs from the run's preset {preset!r}; use a checkpoint of that preset")
        model.load_state_dict(src.state_dict())
        return f"initialised from {path} (all weights)"
    seeded = init_fixtalk_from_edtalk(path, preset=preset)
    model.load_state_dict(seeded.state_dict())
    return f"initialised from {path} (EMI/EDI fresh)"


def _train(args: argparse.Namespace) -> int:
    from fixtalk.train.trainer import Trainer

    cfg = load_train_config(args.config)
    if args.device:
        cfg.device = args.device
    if args.max_minutes is not None:
        cfg.max_minutes = args.max_minutes
    trainer = Trainer(cfg, args.data, args.out)
    if args.init and trainer.global_step == 0:
        print(init_weights(trainer.model, args.init, cfg.preset))
    try:
        trainer.run()
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

"""What one portrait-adaptation step costs on this machine, per recipe (issue #21, deliverable 4).

    .venv/bin/python benchmarks/adapt_step.py [--data runs/default/data] [--steps 12]
        [--recipe NAME KEY=VALUE ...] ...

The portrait is the held-out one ``make eval-default`` adapts to (the first eval clip's source
frame); its adaptation clips are made once, then each recipe (``default`` always, plus every
``--recipe``: a name and AdaptConfig overrides, as ``fixtalk eval --adapt --recipe`` takes them)
runs ``--steps`` training steps after two warm-up steps, and the median seconds per step is
printed with the minutes the recipe's full step count would take. Recipes are run in turn, so
each sees the same machine load.
"""
from __future__ import annotations

import argparse
import copy
import itertools
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def step_seconds(model, data: Path, cfg, steps: int, work: Path) -> list[float]:
    """Seconds of each of ``steps`` training steps of the adaptation ``cfg`` on the clips in ``data``."""
    from fixtalk.adapt import adaptation_stages, train_config
    from fixtalk.train.trainer import Trainer

    times: list[float] = []

    def log(line: str) -> None:  # the trainer logs every step's losses with log_every=1
        if line.startswith("global_step="):
            times.append(time.monotonic())

    stage = replace(adaptation_stages(cfg)[0], steps=steps + 2)
    tcfg = replace(train_config(model, [stage], cfg), log_every=1, checkpoint_minutes=0)
    Trainer(tcfg, data, work, log=log, model=copy.deepcopy(model)).run_stage(stage)
    return [b - a for a, b in itertools.pairwise(times[2:])]  # after the two warm-up steps


def main(argv: list[str] | None = None) -> int:
    from fixtalk.adapt import portrait_clips
    from fixtalk.checkpoints import DEFAULT_CHECKPOINT, load_model
    from fixtalk.train.data_format import list_clips, read_clip
    from fixtalk.train.evaluate import parse_recipe

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="runs/default/data", help="synthetic set (make eval-default makes it)")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--recipe", nargs="+", action="append", default=[], metavar="NAME KEY=VALUE",
                    help="a named recipe: AdaptConfig overrides (repeatable)")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = load_model(DEFAULT_CHECKPOINT)
    clip = read_clip(list_clips(args.data, "eval")[0])
    results = {}
    with tempfile.TemporaryDirectory(prefix="adapt-step-") as tmp:
        clips = Path(tmp) / "clips"
        portrait_clips(np.array(clip.frames[0]), np.array(clip.landmarks[0]), clips, parse_recipe([]))
        for name, *items in [["default"], *args.recipe]:
            cfg = parse_recipe(items)
            secs = step_seconds(model, clips, cfg, args.steps, Path(tmp) / f"train-{name}")
            med = statistics.median(secs)
            results[name] = {"recipe": items, "seconds_per_step": round(med, 3), "steps": cfg.steps,
                             "minutes_per_portrait": round(med * cfg.steps / 60, 2),
                             "threads": cfg.num_threads or torch.get_num_threads()}
            print(f"{name:>16}: {med:.3f} s/step ({min(secs):.3f}-{max(secs):.3f}), "
                  f"{cfg.steps} steps = {med * cfg.steps / 60:.1f} min  {' '.join(items)}", flush=True)
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``fixtalk data prepare VIDEO_DIR OUT`` as a Ray Data job (Ray wiring only).

    ray.data.from_items([one row per unfinished video], override_num_blocks=<videos>)
      .map(prepare_row, num_cpus=--num-cpus)     # one task per video: prepare_video, no Ray inside
      .iter_rows()                               # each video's done-record as it finishes

Rows carry paths and the done-record (JSON text) only; frames never enter Ray. What a video is
made into, the resume and the summary are :mod:`fixtalk.train.prepare_job`'s; this module only
supplies the mapper, which starts Ray (locally, or joins ``--address``) when a video is left to do. On a cluster, VIDEO_DIR
and OUT must be on storage every node mounts: the tasks write their clips straight into OUT.
A video's own problems never raise (they are its drop reasons); an exception out of a task is
systemic and stops the job (``max_errored_blocks = 0``), and a rerun resumes.

Other ``fixtalk data`` commands go to :mod:`fixtalk.train.cli` unchanged.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

from fixtalk.config import PrepareConfig
from fixtalk.train.prepare import prepare_video
from fixtalk.train.prepare_records import VideoTask


def prepare_row(row: dict, out: str, cfg: PrepareConfig) -> dict:
    """Ray map function: one video row -> its done-record as JSON text."""
    record = prepare_video(VideoTask(**{k: row[k] for k in ("path", "source", "video_id", "identity")}),
                           out, cfg)
    return {"video_id": row["video_id"], "record": json.dumps(record)}


class RayMapper:
    """The mapper of :func:`fixtalk.train.prepare_job.run_job` on Ray: starts a local Ray (or
    joins ``address``) when there is a video to prepare, then runs each as one task and yields
    each done-record as it finishes. :meth:`close` shuts down the Ray it started."""

    def __init__(self, address: str | None = None):
        self.address = address
        self.started = False

    def __call__(self, tasks: list[VideoTask], out: Path, cfg: PrepareConfig) -> Iterator[dict]:
        import ray.data

        from pipeline.dag import configure_data_context
        from pipeline.ray_session import start_ray

        self.started = start_ray(self.address) or self.started
        configure_data_context()
        ds = ray.data.from_items([asdict(t) for t in tasks], override_num_blocks=len(tasks))
        ds = ds.map(prepare_row, fn_kwargs={"out": str(out), "cfg": cfg}, num_cpus=float(cfg.num_cpus))
        for row in ds.iter_rows():
            yield json.loads(row["record"])

    def close(self) -> None:
        if self.started:
            import ray

            ray.shutdown()
            self.started = False


def main(argv: list[str] | None = None) -> int:
    """``fixtalk data ...``: ``prepare`` runs the Ray job, the rest goes to fixtalk.train.cli."""
    from fixtalk.train.cli import build_parser, prepare_config
    from fixtalk.train.prepare_job import run_job
    from fixtalk.train.prepare_records import UsageError

    args = build_parser().parse_args(argv)
    if args.cmd != "data" or args.data_cmd != "prepare":
        return args.func(args)
    mapper = RayMapper(args.address)
    try:
        return run_job(args.video_dir, args.out, prepare_config(args), mapper=mapper).exit_code
    except UsageError as exc:
        print(f"fixtalk data prepare: {exc}", file=sys.stderr)
        return 2
    finally:
        mapper.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

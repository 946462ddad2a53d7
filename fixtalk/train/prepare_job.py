"""``fixtalk data prepare VIDEO_DIR OUT``: the job around the per-video worker.

:func:`run_job` lists the videos under VIDEO_DIR, skips those with a done-record in OUT (a
rerun resumes; a record made with other clip settings stops the job with a clear message),
hands the others to a *mapper* and writes the summary (:mod:`fixtalk.train.prepare_summary`).
The mapper runs :func:`fixtalk.train.prepare.prepare_video` on each video and yields each
done-record as it finishes: :func:`run_in_process` here, one video after another, or the Ray Data
job of the ``fixtalk`` command (``pipeline.data_prepare``), one task per video, locally or on a
cluster.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from fixtalk.config import PrepareConfig
from fixtalk.train.prepare import describe, prepare_video
from fixtalk.train.prepare_records import (
    UsageError,
    VideoTask,
    clear_partial,
    list_videos,
    read_record,
    read_records,
    record_path,
)
from fixtalk.train.prepare_summary import write_summary

Mapper = Callable[[list[VideoTask], Path, PrepareConfig], Iterable[dict]]


def run_in_process(tasks: list[VideoTask], out: Path, cfg: PrepareConfig) -> Iterator[dict]:
    """The mapper without Ray: the videos one after another in this process."""
    for task in tasks:
        yield prepare_video(task, out, cfg)


def pending(tasks: list[VideoTask], out: Path, cfg: PrepareConfig) -> tuple[list[VideoTask], list[VideoTask]]:
    """(videos to prepare, videos finished before); refuses records made with other settings."""
    todo, done = [], []
    wanted = cfg.clip_settings()
    for task in tasks:
        record = read_record(out, task.video_id)
        if record is None:
            todo.append(task)
            continue
        had = record.get("settings", {})
        changed = {k: (had.get(k), v) for k, v in wanted.items() if had.get(k) != v}
        if changed:
            what = ", ".join(f"{k}: {a!r} before, {b!r} now" for k, (a, b) in changed.items())
            raise UsageError(f"{record_path(out, task.video_id)} was prepared with other settings ({what}); "
                             "give a new OUT folder, or rerun with the settings used before")
        done.append(task)
    return todo, done


@dataclass
class PrepareResult:
    """What a run did: ``prepared`` and ``skipped`` (done before) video sources, every
    done-record in OUT (``records``) and the summary ``text`` printed."""

    prepared: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)
    text: str = ""

    @property
    def clips(self) -> int:
        return sum(len(r["clips"]) for r in self.records)

    @property
    def exit_code(self) -> int:
        """0 when OUT holds clips, 1 when no video gave any."""
        return 0 if self.clips else 1


def run_job(video_dir: str | Path, out: str | Path, cfg: PrepareConfig | None = None,
            mapper: Mapper = run_in_process, log: Callable[[str], None] = print) -> PrepareResult:
    """Prepare every unfinished video under ``video_dir`` into ``out`` and summarise OUT."""
    cfg, out = cfg or PrepareConfig(), Path(out)
    tasks = list_videos(video_dir)
    out.mkdir(parents=True, exist_ok=True)
    clear_partial(out)
    todo, done = pending(tasks, out, cfg)
    log(f"[prepare] {len(tasks)} videos under {video_dir}: {len(todo)} to prepare, "
        f"{len(done)} skipped (finished before: {out}/_videos)")
    result = PrepareResult(skipped=[t.source for t in done])
    if todo:
        for record in mapper(todo, out, cfg):
            result.prepared.append(record["source"])
            log(describe(record))
    clear_partial(out)
    result.records = read_records(out)
    result.text = write_summary(out, result.records)
    log(result.text)
    log(f"[prepare] {result.clips} clips in {out}; summary: {out}/prepare_summary.md")
    return result

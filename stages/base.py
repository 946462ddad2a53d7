"""The stage contract shared by every pipeline stage.

A stage is a callable class: its constructor takes the stage's config section and loads models
once; calling it with a pandas DataFrame batch returns a DataFrame with exactly one row per input
row. Rows already failed pass through untouched. A problem with one clip never raises: the row gets
``status="failed"``, ``error_stage``, ``error_type`` and ``error_message``. Only systemic faults
(a checkpoint that cannot load, a missing ffmpeg binary) raise, from the constructor or from
``process_row`` as :class:`SystemicError`.

Each stage records its own seconds per clip in a ``t_<stage>`` column.
"""
from __future__ import annotations

import functools
import os
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

#: Columns every row carries through the pipeline (besides the manifest's own columns).
STATUS_COLUMNS = ("status", "error_stage", "error_type", "error_message")


class ClipError(Exception):
    """A per-clip problem. ``field`` names the manifest column at fault (if any); the message says
    what is wrong and what to do about it."""

    def __init__(self, message: str, *, field: str | None = None, error_type: str | None = None):
        super().__init__(message)
        self.field = field
        self.error_type = error_type or type(self).__name__


class SystemicError(RuntimeError):
    """A fault that is not the clip's: stop the run (missing binary, unloadable checkpoint)."""


class Stage:
    """Base class: subclasses set ``name`` and implement :meth:`process_row`.

    ``process_row`` receives one row as a dict and returns a dict of columns to set on it (new or
    updated). Raising :class:`ClipError` (or any other ``Exception``) fails that row alone;
    :class:`SystemicError` propagates.
    """

    name: ClassVar[str] = "stage"

    def process_row(self, row: dict[str, Any]) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        rows = batch.to_dict(orient="records")
        out: list[dict[str, Any]] = []
        for row in rows:
            out.append(self.run_row(row))
        frame = pd.DataFrame(out)
        return frame

    def run_row(self, row: dict[str, Any]) -> dict[str, Any]:
        row = {key: (None if _missing(value) else value) for key, value in row.items()}
        for col in STATUS_COLUMNS:
            row.setdefault(col, None)
        if row.get("status") is None:
            row["status"] = "ok"
        if row["status"] != "ok":
            return row
        t0 = time.perf_counter()
        journal = _attempt_journal(row, self.name)
        try:
            died = _begin_attempt(journal) - 1 if journal else 0
            limit = int(row.get("max_attempts") or 0)
            if limit and died >= limit:
                raise ClipError(
                    f"the {self.name} stage's worker process died {died} times while working on this "
                    f"clip (killed, out of memory, or a crash in native code), so it is not tried again "
                    f"(run.max_retries={limit - 1}); check the node's memory and the Ray logs of node "
                    f"{node_id()}, then rerun with --retry-failed", error_type="WorkerDied")
            row.update(self.process_row(row))
        except SystemicError:
            raise
        except ClipError as exc:
            fail_row(row, self.name, exc.error_type, _with_field(str(exc), exc.field))
        except Exception as exc:  # noqa: BLE001 - a bad clip must never stop the run
            detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
            fail_row(row, self.name, type(exc).__name__, detail)
        finally:
            if journal:
                journal.unlink(missing_ok=True)  # finished (either way): not a death
        row[f"t_{self.name}"] = round(time.perf_counter() - t0, 4)
        row[f"node_{self.name}"] = node_id()
        return row


def _attempt_journal(row: dict[str, Any], stage: str) -> Path | None:
    """``<work_dir>/.attempts-<stage>``: exists only while the stage works on the clip, so a file
    found on entry means an earlier worker died on it (its count says how often)."""
    work = row.get("work_dir")
    return Path(work) / f".attempts-{stage}" if work else None


def _begin_attempt(journal: Path) -> int:
    """Count this attempt in ``journal`` (temp file + rename) and return the count (1 = first)."""
    try:
        count = int(journal.read_text() or 0) + 1
    except (OSError, ValueError):
        count = 1
    journal.parent.mkdir(parents=True, exist_ok=True)
    tmp = journal.with_name(f"{journal.name}.{os.getpid()}.tmp")
    tmp.write_text(str(count))
    os.replace(tmp, journal)
    return count


@functools.lru_cache(maxsize=1)
def node_id() -> str:
    """Where this process runs: the Ray node id (first 12 hex digits) inside a Ray worker, else
    ``host:<hostname>``. Each stage records it per clip in ``node_<stage>``."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return ray.get_runtime_context().get_node_id()[:12]
    return f"host:{socket.gethostname()}"


def _missing(value: Any) -> bool:
    """NaN / NA / NaT -> missing. A null cell of a pandas or Arrow-backed batch arrives as one of
    these, not as ``None``; normalising here lets every stage test ``row.get(col) is None``."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and value != value


def _with_field(message: str, field: str | None) -> str:
    return f"{field}: {message}" if field and not message.startswith(f"{field}:") else message


def fail_row(row: dict[str, Any], stage: str, error_type: str, message: str) -> dict[str, Any]:
    """Mark ``row`` failed in place (and return it)."""
    row["status"] = "failed"
    row["error_stage"] = stage
    row["error_type"] = error_type
    row["error_message"] = message
    return row

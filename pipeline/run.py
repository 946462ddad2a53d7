"""``fixtalk run``: manifest -> ledger anti-join -> stages (Ray or local) -> ledger, results, run.json.

Exit codes: 0 every clip ok (or skipped), 3 some clips failed, 2 usage / invalid manifest,
1 systemic error (the run stopped; finished clips stay recorded and are not redone next time).
"""
from __future__ import annotations

import functools
import gc
import glob
import logging
import os
import re
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

import pandas as pd

from manifests.importer import ManifestError
from manifests.validate import load_manifest
from pipeline import dag
from pipeline.config import ConfigError, PipelineConfig, load_config
from pipeline.ledger import Ledger, checkpoint_id, file_sha256, fingerprint, latest, options_digest, read_ledger
from pipeline.plan import CLIPS_DIR, WORK_DIR, parse_shard, read_only_ids, select
from pipeline.progress import Progress
from pipeline.ray_session import start_ray
from pipeline.results import (
    FinishedRows,
    assemble,
    code_version,
    counts,
    error_summary,
    stage_timings,
    versions,
    write_json_atomic,
    write_results,
)

log = logging.getLogger("fixtalk.run")

EXIT_OK, EXIT_SYSTEMIC, EXIT_USAGE, EXIT_FAILED = 0, 1, 2, 3


class UsageError(ValueError):
    """Bad command-line input (exit 2)."""


@dataclass
class RunRequest:
    manifest: str | os.PathLike[str]
    out: str | os.PathLike[str]
    config_path: str | os.PathLike[str] | None = None
    overrides: Sequence[str] = ()
    checkpoint: str | None = None
    retry_failed: bool = False
    only: str | os.PathLike[str] | None = None
    shard: str | None = None
    limit: int | None = None
    address: str | None = None
    stage_classes: Sequence[type] | None = None  # replaces the configured stages (tests, benchmarks)
    tty: bool | None = None


@dataclass
class RunOutcome:
    exit_code: int
    results: pd.DataFrame
    counts: dict[str, int]
    results_path: Path
    run_json_path: Path
    error: str | None = None
    info: dict[str, Any] = field(default_factory=dict)


def _build_config(req: RunRequest) -> PipelineConfig:
    cfg = load_config(req.config_path, list(req.overrides))
    if req.checkpoint:
        if not Path(req.checkpoint).is_file():
            raise UsageError(f"--checkpoint {req.checkpoint}: file not found")
        cfg.model.checkpoint = str(Path(req.checkpoint).resolve())
    if req.address:
        cfg.run.ray_address = req.address
    if cfg.run.engine not in ("ray", "local"):
        raise UsageError(f"run.engine={cfg.run.engine!r}: use 'ray' or 'local'")
    return cfg


def _prepare_rows(frame: pd.DataFrame, out: Path, cfg: PipelineConfig, ckpt: str) -> pd.DataFrame:
    """Columns every row carries into the stages; fingerprints of valid rows."""
    frame = frame.copy()
    frame["out_dir"] = str(out)
    work_root = os.path.join(str(out), WORK_DIR)
    frame["work_dir"] = [os.path.join(work_root, str(c)) if s == "ok" else None
                         for c, s in zip(frame["clip_id"], frame["status"])]
    frame["checkpoint_id"] = ckpt
    frame["code_version"] = code_version()
    frame["max_attempts"] = max(1, int(cfg.run.max_retries) + 1)  # see stages.base.Stage.run_row
    opts = options_digest(cfg)
    digest = functools.lru_cache(maxsize=None)(file_sha256)  # each input file hashed (and stat'ed) once per run
    prints: list[str | None] = []
    for i, row in enumerate(frame.to_dict(orient="records")):
        if row["status"] != "ok":
            prints.append(None)
            continue
        try:
            prints.append(fingerprint(row, opts, ckpt, digest=digest))
        except OSError as exc:
            prints.append(None)
            frame.loc[frame.index[i], ["status", "error_stage", "error_type", "error_message"]] = [
                "failed", "manifest", "InvalidRow", f"cannot read an input file: {exc}; check the path"]
    frame["fingerprint"] = prints
    if cfg.provenance.require_consent:
        _require_consent(frame)
    return frame


def _require_consent(frame: pd.DataFrame) -> None:
    """``provenance.require_consent``: a valid row without a ``consent`` cell fails before anything
    is rendered (mux checks it again for stages run on their own)."""
    from stages.provenance.c2pa import CONSENT_MISSING

    consent = frame["consent"] if "consent" in frame.columns else pd.Series(None, index=frame.index)
    empty = consent.isna() | (consent.astype(str).str.strip() == "")
    missing = (frame["status"] == "ok") & empty
    frame.loc[missing, ["status", "error_stage", "error_type", "error_message"]] = [
        "failed", "manifest", "MissingConsent", f"column 'consent': {CONSENT_MISSING}"]


def _check_provenance(cfg: PipelineConfig) -> None:
    """The signing identity, once in the driver before any stage starts: a bad ``provenance.cert``
    or ``provenance.key`` (or one the C2PA library refuses) stops the run with its message
    (SystemicError), and the local identity is made here rather than raced for by mux actors."""
    if cfg.provenance.enabled:
        from stages.provenance.c2pa import check_signer
        from stages.provenance.signing_identity import resolve_identity

        check_signer(resolve_identity(cfg.provenance.cert, cfg.provenance.key, cfg.provenance.identity_dir))


def _remove_stale_temps(out: Path) -> None:
    """Hidden temp files left in OUT/clips by a killed run (the mux stage renames into place)."""
    clips = out / CLIPS_DIR
    if not clips.is_dir():
        return
    for path in clips.glob(".*"):
        if path.is_file() and time.time() - path.stat().st_mtime > 60:
            path.unlink(missing_ok=True)


def _remove_own_temps(out: Path, clip_ids: Sequence[str]) -> None:
    """At the end of a run, the hidden temp files of this run's clips (a mux actor killed with its
    node leaves one); other shards' temps are left to their own runs."""
    clips = out / CLIPS_DIR
    for clip_id in clip_ids:
        for path in clips.glob(f".tmp-{glob.escape(str(clip_id))}-*"):
            path.unlink(missing_ok=True)


def _ensure_ray(cfg: PipelineConfig) -> bool:
    """Start a local Ray (or join ``run.ray_address``) unless one is running; True if we started it."""
    return start_ray(cfg.run.ray_address, cfg.run.num_cpus)


_EXC_LINE = re.compile(r"^\s*([A-Za-z_][\w.]*(?:Error|Exception|Fault|Exit|Interrupt)): (.+)$")


def _root_cause(exc: BaseException) -> str:
    """The original exception of a (Ray-wrapped) failure as ``Type: message``. Ray re-raises a
    stage's exception as ``RayTaskError(UserCodeException)`` whose text carries the remote
    traceback; the first non-Ray ``Type: message`` line in it is the stage's own."""
    texts = []
    cur: BaseException | None = exc
    seen: set[int] = set()
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        texts.append(f"{type(cur).__module__}.{type(cur).__name__}: {cur}")
        cur = getattr(cur, "cause", None) or cur.__cause__
    for text in texts:
        for line in text.splitlines():
            m = _EXC_LINE.match(line)
            if m and not m.group(1).startswith(("ray.", "builtins.StopIteration")):
                return f"{m.group(1).rsplit('.', 1)[-1]}: {m.group(2).strip()}"
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"


def _batches(cfg: PipelineConfig, todo: pd.DataFrame, classes: Sequence[type]) -> Iterator[pd.DataFrame]:
    if cfg.run.engine == "local":
        stages = [cls(config=cfg) for cls in classes]
        yield from dag.iter_local(stages, todo)
    else:
        yield from dag.iter_ray(todo, classes, cfg)


def _after_mux(classes: Sequence[type]) -> list[type]:
    """The stages after mux: what a clip delivered by a killed run still needs (see
    :mod:`stages.media.receipt`)."""
    names = [getattr(c, "name", c.__name__) for c in classes]
    return list(classes[names.index("mux") + 1:]) if "mux" in names else list(classes)


def _chain(cfg: PipelineConfig, rows: pd.DataFrame, classes: Sequence[type]) -> Iterator[pd.DataFrame]:
    """``rows`` through ``classes``; with no class left, the rows as they are (one batch each)."""
    if classes:
        yield from _batches(cfg, rows, classes)
    else:
        for i in range(len(rows)):
            yield rows.iloc[i:i + 1].reset_index(drop=True)


def run(req: RunRequest) -> RunOutcome:
    """Run a manifest to the end (see module doc for exit codes). Raises ``ManifestError``,
    ``ConfigError`` or ``UsageError`` for exit-2 problems."""
    started = time.time()
    cfg = _build_config(req)
    try:
        shard = parse_shard(req.shard) if req.shard else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    only = read_only_ids(req.only) if req.only else None
    if req.limit is not None and req.limit < 0:
        raise UsageError("--limit must be >= 0")
    validated = load_manifest(req.manifest)
    out = Path(req.out).resolve()
    (out / CLIPS_DIR).mkdir(parents=True, exist_ok=True)
    suffix = f".shard-{shard[0]}-of-{shard[1]}" if shard else ""
    results_path, run_json_path = out / f"results{suffix}.parquet", out / f"run{suffix}.json"

    ckpt = checkpoint_id(cfg)
    rows = _prepare_rows(validated.frame, out, cfg, ckpt)
    ledger = Ledger(out)
    ledger.compact()
    prior = latest(read_ledger(out))
    sel = select(rows, prior, out, retry_failed=req.retry_failed, only=only, shard=shard, limit=req.limit)
    _remove_stale_temps(out)
    try:
        stage_names = dag.enabled_stage_names(cfg)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    for problem in validated.problems:
        print(f"invalid: {problem}", file=sys.stderr)
    if sel.unknown_only_ids:
        print(f"--only: {len(sel.unknown_only_ids)} clip_id(s) not in the manifest: "
              f"{', '.join(sel.unknown_only_ids[:10])}", file=sys.stderr)
    settled = sel.settled
    n_skipped = int((settled["status"] == "skipped").sum()) if len(settled) else 0
    n_old_failed = int(((settled["status"] == "failed") & (settled["error_stage"] != "manifest")).sum()) if len(settled) else 0
    n_finish = len(sel.finish) if sel.finish is not None else 0
    print(f"manifest: {len(rows)} rows, {validated.n_failed} invalid; rendering {len(sel.todo)}, "
          + (f"finishing {n_finish} delivered but not checked, " if n_finish else "")
          + f"skipping {n_skipped} already done"
          + (f" and {n_old_failed} failed before (--retry-failed renders them)" if n_old_failed else "")
          + (f", {sel.n_out_of_shard} in other shards" if shard else "")
          + (f", {len(sel.unselected)} not selected" if len(sel.unselected) else ""), file=sys.stderr)

    done = FinishedRows()
    error: str | None = None
    error_tb: str | None = None
    exit_code = EXIT_OK
    started_ray = False
    progress = Progress(len(sel.todo) + n_finish, tty=req.tty)
    last_results = time.monotonic()

    in_run = [f for f in (sel.finish, sel.todo) if f is not None and len(f)]  # rows this run works on

    def snapshot(final: bool) -> pd.DataFrame:
        pending = [f[~f["clip_id"].isin(done.clip_ids)].assign(status="pending") for f in in_run]
        return assemble([sel.settled, *done.frames(), *[f for f in pending if len(f)], sel.unselected], stage_names)

    try:
        classes = list(req.stage_classes) if req.stage_classes is not None else dag.load_stage_classes(cfg)
        stage_names[:] = [getattr(c, "name", c.__name__) for c in classes]
        # clips delivered by a killed run (receipt + MP4) only need the stages after mux
        work = [(sel.finish, _after_mux(classes)), (sel.todo, classes)] if n_finish else [(sel.todo, classes)]
        work = [(frame, chain) for frame, chain in work if len(frame)]
        if len(sel.todo) and "mux" in stage_names:
            _check_provenance(cfg)
        if cfg.run.engine == "ray" and any(chain for _, chain in work):
            started_ray = _ensure_ray(cfg)
        for frame, chain in work:
            for batch in _chain(cfg, frame, chain):
                ledger.append(batch)
                done.add(batch)
                progress.update(batch)
                if not cfg.run.keep_work:
                    _drop_work_dirs(batch, out)
                if time.monotonic() - last_results > cfg.run.results_every_s:
                    write_results(snapshot(False), results_path)
                    last_results = time.monotonic()
    except KeyboardInterrupt:
        error, exit_code = "interrupted", EXIT_SYSTEMIC
    except Exception as exc:  # noqa: BLE001 - stages raise only for systemic faults
        error, error_tb, exit_code = _root_cause(exc), traceback.format_exc(), EXIT_SYSTEMIC
    finally:
        progress.close()
        # The failed execution's stage actors may sit in reference cycles with the exception's
        # frames; collect them now so they release their CPUs before any next run in this process.
        gc.collect()
        if started_ray:
            import ray

            ray.shutdown()

    _remove_own_temps(out, [clip_id for f in in_run for clip_id in f["clip_id"]])
    results = snapshot(True)
    write_results(results, results_path)
    tally = counts(results)
    if exit_code == EXIT_OK and tally["failed"]:
        exit_code = EXIT_FAILED
    wall = time.time() - started
    info = {
        "manifest": str(Path(req.manifest).resolve()), "out": str(out), "exit_code": exit_code,
        "started": datetime.fromtimestamp(started, timezone.utc).isoformat(),
        "finished": datetime.now(timezone.utc).isoformat(), "wall_time_s": round(wall, 3),
        "counts": tally, "rendered_this_run": len(done) - n_finish,
        "finished_from_receipt": n_finish,
        "clips_per_min": round(60.0 * len(done) / wall, 3) if wall > 0 else None,
        "errors": error_summary(results), "stage_seconds": stage_timings(pd.concat(done.frames()) if len(done) else results.iloc[0:0]),
        "error": error, "error_traceback": error_tb, "checkpoint_id": ckpt, "versions": versions(),
        "args": {"config": str(req.config_path) if req.config_path else None, "set": list(req.overrides),
                 "checkpoint": req.checkpoint, "retry_failed": req.retry_failed, "only": str(req.only) if req.only else None,
                 "shard": req.shard, "limit": req.limit, "address": req.address},
        "stages": stage_names, "config": cfg.to_dict(), "ledger_run_id": ledger.run_id,
    }
    write_json_atomic(info, run_json_path)
    _print_summary(tally, results, error, results_path)
    if not shard:
        _write_report(out)
    return RunOutcome(exit_code, results, tally, results_path, run_json_path, error, info)


def _drop_work_dirs(batch: pd.DataFrame, out: Path) -> None:
    root = (out / WORK_DIR).resolve()
    for status, work in zip(batch["status"], batch.get("work_dir", [])):
        if status == "ok" and work and Path(work).resolve().parent == root:
            shutil.rmtree(work, ignore_errors=True)


def _print_summary(tally: dict[str, int], results: pd.DataFrame, error: str | None, path: Path) -> None:
    print(f"done: {tally['ok']} ok, {tally['skipped']} skipped, {tally['failed']} failed"
          + (f", {tally['pending']} pending" if tally["pending"] else "") + f"; results: {path}", file=sys.stderr)
    failed = results[results["status"] == "failed"]
    for row in failed.head(20).itertuples():
        print(f"  failed {row.clip_id} [{row.error_stage}/{row.error_type}]: {row.error_message}", file=sys.stderr)
    if len(failed) > 20:
        print(f"  ... and {len(failed) - 20} more (see results.parquet)", file=sys.stderr)
    if error:
        print(f"systemic error, run stopped: {error}", file=sys.stderr)


def _write_report(out: Path) -> None:
    try:
        from pipeline.report import write_report
    except ImportError:
        return
    try:
        write_report(out)
    except Exception as exc:  # noqa: BLE001 - a report problem must not change the run's outcome
        print(f"warning: report not written: {type(exc).__name__}: {exc}", file=sys.stderr)


__all__ = ["RunRequest", "RunOutcome", "run", "UsageError", "ManifestError", "ConfigError",
           "EXIT_OK", "EXIT_SYSTEMIC", "EXIT_USAGE", "EXIT_FAILED"]

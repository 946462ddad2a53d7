"""The completion ledger under ``OUT/ledger/``: what finished, with which inputs, and how.

Layout: one small Parquet file per finished batch, ``OUT/ledger/part-<ns>-<host>-<pid>-<seq>.parquet``,
written to a hidden temp name in the same folder, fsynced, then renamed (atomic on POSIX). A reader
only ever sees whole files, so a ``kill -9`` at any moment leaves the ledger readable: at worst a
hidden ``.tmp-*`` file (ignored by :func:`read_ledger`, by pyarrow and by pandas directory reads)
and the clips that were in flight missing. Only the driver writes; several drivers (``--shard``)
may share one ``OUT`` because every part has a unique name.

A record is the full result row of a clip plus ``recorded_at`` (epoch seconds) and ``run_id``;
:func:`latest` keeps the newest record per ``clip_id``.

Fingerprint (what decides "unchanged"): sha256 over
  * the *content* of the row's input files (portrait, audio, pose_video, expression_video),
  * the row's ``script``, ``emotion``, ``emotion_intensity`` and ``consent`` (it is signed into
    the clip's content credentials),
  * every option of the render-relevant config sections (see :data:`FINGERPRINT_SECTIONS`) except
    the ones in :data:`FINGERPRINT_EXCLUDE` (resources, device, batch sizes: they change speed, not
    pixels; the checkpoint path is replaced by its content id),
  * the checkpoint id (:func:`checkpoint_id`: sha256 of the checkpoint file, and of the Audio2Lip
    file when one is set).
Code changes do not change fingerprints; re-render on purpose with ``--only`` or a new ``OUT``.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

LEDGER_DIR = "ledger"
PART_GLOB = "part-*.parquet"
FINGERPRINT_VERSION = "1"
FINGERPRINT_SECTIONS = ("model", "speech", "ingest", "align", "face_crop", "adapt", "motion", "render", "mux",
                        "provenance")
FINGERPRINT_EXCLUDE = frozenset({
    "resources", "model.device", "model.checkpoint", "model.audio2lip", "render.batch_size",
    "motion.chunk_frames", "face_crop.face_alignment_device", "adapt.recipe.num_threads",
    "adapt.recipe.checkpoint_minutes", "adapt.footage", "dub.batch_size", "provenance.identity_dir",
})
INPUT_FILE_COLUMNS = ("portrait", "audio", "pose_video", "expression_video")
#: Footage inputs and the options that only footage rows use: mixed into the fingerprint of rows
#: that have footage, so that rows without it keep the fingerprints they had before dubbing existed.
FOOTAGE_FILE_COLUMNS = ("source_video", "presenter_video")
FOOTAGE_SECTIONS = ("dub", "adapt.footage")
INPUT_VALUE_COLUMNS = ("script", "emotion", "emotion_intensity", "consent")
COMPACT_AFTER = 256  # parts; compaction folds them into one file at the start of a run

_hash_cache: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's content, cached per (path, size, mtime) for this process."""
    st = os.stat(path)
    key = (os.fspath(path), st.st_size, st.st_mtime_ns)
    digest = _hash_cache.get(key)
    if digest is None:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        digest = _hash_cache[key] = h.hexdigest()
    return digest


def checkpoint_id(cfg: Any) -> str:
    """Content id of the model that renders (:func:`fixtalk.checkpoints.checkpoint_id` of the
    checkpoint, ``+a2l:<hash>`` when an Audio2Lip file is set); ``missing:<path>`` when the file
    does not exist (the motion/render stages then refuse to start: a systemic error)."""
    from fixtalk.checkpoints import DEFAULT_CHECKPOINT, checkpoint_id as content_id

    path = Path(cfg.model.checkpoint) if cfg.model.checkpoint else DEFAULT_CHECKPOINT
    if not path.is_file():
        return f"missing:{path}"
    ident = content_id(path)
    if cfg.model.audio2lip and Path(cfg.model.audio2lip).is_file():
        ident += f"+a2l:{file_sha256(cfg.model.audio2lip)[:12]}"
    return ident


def render_options(cfg: Any) -> dict[str, Any]:
    """The config options that go into the fingerprint, flattened to ``section.key``."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if prefix in FINGERPRINT_EXCLUDE or prefix.rsplit(".", 1)[-1] in FINGERPRINT_EXCLUDE:
            return
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}", v)
        else:
            flat[prefix] = value

    data = asdict(cfg)
    for section in FINGERPRINT_SECTIONS:
        walk(section, data.get(section, {}))
    return flat


def options_digest(cfg: Any) -> str:
    """Digest of the render options; footage rows add :func:`footage_digest` (``a+b``)."""
    common = hashlib.sha256(json.dumps(render_options(cfg), sort_keys=True, default=str).encode()).hexdigest()
    return f"{common}+{footage_digest(cfg)}"


def footage_digest(cfg: Any) -> str:
    """Digest of the options only footage rows use (``dub``, ``adapt.footage``)."""
    data = asdict(cfg)
    used = {name: data["dub"] if name == "dub" else data["adapt"]["footage"] for name in FOOTAGE_SECTIONS}
    for key in ("batch_size",):
        used["dub"].pop(key, None)
    for key in ("num_threads", "checkpoint_minutes"):
        used["adapt.footage"].pop(key, None)
    return hashlib.sha256(json.dumps(used, sort_keys=True, default=str).encode()).hexdigest()[:16]


def fingerprint(row: dict[str, Any], options_hex: str, ckpt_id: str,
                digest: Callable[[str], str] = file_sha256) -> str:
    """Fingerprint of one validated row (paths absolute); raises ``OSError`` if an input vanished.
    ``digest``: the content hash of a file (a caller fingerprinting many rows passes a memo)."""
    h = hashlib.sha256(f"fixtalk-fp-{FINGERPRINT_VERSION}\n".encode())
    for col in INPUT_FILE_COLUMNS:
        value = row.get(col)
        h.update(f"{col}={digest(value) if value else '-'}\n".encode())
    for col in INPUT_VALUE_COLUMNS:
        value = row.get(col)
        if isinstance(value, float):
            value = repr(round(value, 6))
        h.update(f"{col}={'' if value is None else value}\n".encode())
    common, _, footage = options_hex.partition("+")
    if any(row.get(col) for col in FOOTAGE_FILE_COLUMNS):
        for col in FOOTAGE_FILE_COLUMNS:
            value = row.get(col)
            h.update(f"{col}={digest(value) if value else '-'}\n".encode())
        h.update(f"footage_options={footage}\n".encode())
    h.update(f"options={common}\ncheckpoint={ckpt_id}\n".encode())
    return h.hexdigest()


# --------------------------------------------------------------------------------------- writing

def ledger_dir(out: str | os.PathLike[str]) -> Path:
    return Path(out) / LEDGER_DIR


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _to_table(frame: pd.DataFrame) -> pa.Table:
    """Arrow table of a result frame; columns pyarrow cannot type (mixed objects) become strings."""
    try:
        return pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        fixed = frame.copy()
        for col in fixed.columns:
            try:
                pa.array(fixed[col], from_pandas=True)
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
                fixed[col] = [None if v is None else str(v) for v in fixed[col]]
        return pa.Table.from_pandas(fixed, preserve_index=False)


def write_parquet_atomic(table: pa.Table, dst: Path) -> Path:
    """Write ``table`` to ``dst`` via a hidden temp file in the same folder, fsync, rename."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".tmp-{uuid.uuid4().hex}.parquet"
    try:
        pq.write_table(table, tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dst)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(dst.parent)
    return dst


class Ledger:
    """Append-only writer of ledger parts under ``OUT/ledger``."""

    def __init__(self, out: str | os.PathLike[str], run_id: str | None = None):
        self.dir = ledger_dir(out)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self._host = "".join(c if c.isalnum() else "-" for c in socket.gethostname())[:32]
        self._seq = 0

    def append(self, frame: pd.DataFrame) -> Path | None:
        """Record finished rows (one part file); returns its path (``None`` for an empty frame)."""
        if frame is None or len(frame) == 0:
            return None
        frame = frame.copy()
        frame["recorded_at"] = time.time()
        frame["run_id"] = self.run_id
        self._seq += 1
        name = f"part-{time.time_ns():020d}-{self._host}-{os.getpid()}-{self._seq:06d}.parquet"
        return write_parquet_atomic(_to_table(frame), self.dir / name)

    def compact(self, min_parts: int = COMPACT_AFTER) -> int:
        """Fold existing parts into one (newest record per clip) when there are at least
        ``min_parts``. Crash-safe: the compacted part is renamed into place before the old parts
        are removed, and readers de-duplicate. Returns the number of parts removed."""
        parts = _parts(self.dir)
        if len(parts) < min_parts:
            return 0
        frame = latest(_read_parts(parts))
        name = f"part-{time.time_ns():020d}-{self._host}-{os.getpid()}-compact.parquet"
        write_parquet_atomic(_to_table(frame), self.dir / name)
        removed = 0
        for part in parts:
            try:
                part.unlink()
                removed += 1
            except FileNotFoundError:
                pass
        _fsync_dir(self.dir)
        return removed


# --------------------------------------------------------------------------------------- reading

def _parts(directory: Path) -> list[Path]:
    return sorted(directory.glob(PART_GLOB)) if directory.is_dir() else []


def _read_parts(parts: Iterable[Path]) -> pd.DataFrame:
    frames = []
    for part in parts:
        try:
            frames.append(pq.read_table(part).to_pandas())
        except (OSError, pa.ArrowInvalid):
            continue  # vanished under a concurrent compaction, or damaged by the disk: skip it
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame({"clip_id": pd.Series([], dtype=object)})
    return pd.concat(frames, ignore_index=True, sort=False)


def read_ledger(out: str | os.PathLike[str]) -> pd.DataFrame:
    """Every ledger record under ``OUT`` in write order (safe while a run is writing)."""
    return _read_parts(_parts(ledger_dir(out)))


def latest(records: pd.DataFrame) -> pd.DataFrame:
    """The newest record per ``clip_id`` (ties: the later part wins)."""
    if len(records) == 0 or "clip_id" not in records.columns:
        return records
    order = records.assign(_pos=range(len(records)))
    sort_cols = ["recorded_at", "_pos"] if "recorded_at" in order.columns else ["_pos"]
    order = order.sort_values(sort_cols, kind="stable")
    return order.drop_duplicates("clip_id", keep="last").drop(columns="_pos").reset_index(drop=True)

"""The delivery receipt: how a clip is recorded *as it is delivered*, so that it is never rendered
twice.

The mux stage writes ``OUT/work/<clip_id>/delivered.json`` (atomically: temp name, fsync, rename)
just before it renames the finished MP4 into ``OUT/clips/``; the rename is the commit point. The
receipt holds the row's fingerprint and every column the stages before QC produced. A run killed
after the rename (in QC, or before the driver wrote the ledger) leaves an MP4 with a receipt of the
same fingerprint: the next run finishes that clip from the receipt (QC and the stages after mux)
instead of rendering it again. A run killed before the rename leaves a receipt without its MP4
(or an MP4 from an older fingerprint): the clip is rendered again, as it must be.
"""
from __future__ import annotations

import json
import math
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np

RECEIPT_NAME = "delivered.json"


def receipt_path(work_dir: str | os.PathLike[str]) -> Path:
    return Path(work_dir) / RECEIPT_NAME


def _plain(value: Any) -> Any:
    """A JSON-safe copy of a row value (NumPy scalars and arrays, NaN -> None)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def write_receipt(work_dir: str | os.PathLike[str], row: dict[str, Any]) -> Path:
    """Write the receipt of ``row`` (which must carry ``fingerprint``) into its work folder."""
    dst = receipt_path(work_dir)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".tmp-{uuid.uuid4().hex}.json")
    payload = {"fingerprint": row.get("fingerprint"), "row": {k: _plain(v) for k, v in row.items()}}
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(payload, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, dst)
    return dst


def read_receipt(work_dir: str | os.PathLike[str], fingerprint: str | None,
                 clip: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The delivered row when ``clip`` exists and the receipt has this ``fingerprint`` (a receipt
    that is unreadable, of another fingerprint, or older than nothing delivered gives ``None``)."""
    if not fingerprint or not Path(clip).is_file():
        return None
    try:
        payload = json.loads(receipt_path(work_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(payload, dict) or payload.get("fingerprint") != fingerprint:
        return None
    row = payload.get("row")
    return row if isinstance(row, dict) else None

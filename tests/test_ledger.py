"""Ledger: fingerprints, crash safety under SIGKILL, compaction, and the skip rules."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from pipeline.config import load_config
from pipeline.ledger import Ledger, fingerprint, latest, options_digest, read_ledger, render_options
from pipeline.plan import clip_output_path, parse_shard, select, shard_of

REPO = Path(__file__).resolve().parents[1]


def _row(tmp: Path, portrait: bytes = b"face", audio: bytes = b"speech", **extra) -> dict:
    (tmp / "p.png").write_bytes(portrait)
    (tmp / "a.wav").write_bytes(audio)
    return {"clip_id": "c1", "portrait": str(tmp / "p.png"), "audio": str(tmp / "a.wav"), "pose_video": None,
            "expression_video": None, "script": None, "emotion": None, "emotion_intensity": 1.0, **extra}


def test_fingerprint_tracks_content_options_and_checkpoint(tmp_path: Path):
    cfg = load_config()
    opts = options_digest(cfg)
    base = fingerprint(_row(tmp_path), opts, "ck1")
    assert base == fingerprint(_row(tmp_path), opts, "ck1")  # deterministic
    assert base != fingerprint(_row(tmp_path, audio=b"other speech"), opts, "ck1")  # input content
    assert base != fingerprint(_row(tmp_path, portrait=b"other face"), opts, "ck1")
    assert base != fingerprint(_row(tmp_path, emotion="happy"), opts, "ck1")
    assert base != fingerprint(_row(tmp_path), opts, "ck2")  # checkpoint
    moved = tmp_path / "moved"
    moved.mkdir()
    assert base == fingerprint(_row(moved), opts, "ck1")  # the path itself does not matter
    for key in ("render.output=crop", "mux.crf=30", "ingest.fps=30", "motion.lip_smoothing_sigma=2",
                "motion.silence_gate.enabled=false", "motion.silence_gate.floor_dbfs=-40"):
        assert options_digest(load_config(overrides=[key])) != opts, key
    for key in ("render.resources.num_gpus=1", "model.device=cuda", "render.batch_size=2", "qc.sample_every=9",
                "run.num_cpus=7", "ingest.resources.pool_size=4"):
        assert options_digest(load_config(overrides=[key])) == opts, key
    assert "render.output" in render_options(cfg) and not any("resources" in k for k in render_options(cfg))


def test_append_and_latest(tmp_path: Path):
    ledger = Ledger(tmp_path)
    ledger.append(pd.DataFrame({"clip_id": ["a", "b"], "status": ["failed", "ok"], "frames": [0, 25]}))
    ledger.append(pd.DataFrame({"clip_id": ["a"], "status": ["ok"], "frames": [30]}))
    records = read_ledger(tmp_path)
    assert len(records) == 3
    last = latest(records).set_index("clip_id")
    assert last.loc["a", "status"] == "ok" and last.loc["a", "frames"] == 30
    assert last.loc["b", "status"] == "ok"


WRITER = textwrap.dedent("""
    import os, sys, pandas as pd
    sys.path.insert(0, {repo!r})
    from pipeline.ledger import Ledger
    ledger = Ledger({out!r})
    n = 0
    while True:  # until SIGKILL: batches of 200 rows with a long text column (slow-ish writes)
        ledger.append(pd.DataFrame({{"clip_id": [f"c{{os.getpid()}}-{{n}}-{{i}}" for i in range(200)],
                                     "status": "ok", "blob": ["x" * 2000] * 200}}))
        n += 1
        print(n, flush=True)
""")


def test_reader_survives_sigkill_of_the_writer_at_any_moment(tmp_path: Path):
    out = tmp_path / "out"
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(repo=str(REPO), out=str(out)))
    for attempt, delay in enumerate((0.9, 1.37, 1.81)):
        proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        proc.stdout.readline()  # at least one batch on disk: the writer is mid-loop now
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline:  # read while it writes
            assert len(read_ledger(out)) % 200 == 0
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        records = read_ledger(out)
        assert len(records) > 0 and len(records) % 200 == 0, attempt  # only whole batches are visible
        assert records["clip_id"].is_unique
        parts = sorted((out / "ledger").glob("part-*.parquet"))
        assert all(len(pd.read_parquet(p)) == 200 for p in parts)  # every visible part is complete
    # pandas can read the folder as a dataset too (hidden temp files are ignored)
    assert len(pd.read_parquet(out / "ledger")) == len(read_ledger(out))


def test_compaction_keeps_the_newest_record_per_clip(tmp_path: Path):
    ledger = Ledger(tmp_path)
    for i in range(6):
        ledger.append(pd.DataFrame({"clip_id": ["a", f"x{i}"], "status": ["ok", "ok"], "frames": [i, i]}))
    before = latest(read_ledger(tmp_path)).sort_values("clip_id").reset_index(drop=True)
    assert ledger.compact(min_parts=5) == 6
    assert len(list((tmp_path / "ledger").glob("part-*.parquet"))) == 1
    after = latest(read_ledger(tmp_path)).sort_values("clip_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(before[["clip_id", "frames"]], after[["clip_id", "frames"]])
    assert after.set_index("clip_id").loc["a", "frames"] == 5


def _manifest_rows(out: Path, ids: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"clip_id": ids, "status": "ok", "fingerprint": [f"fp-{c}" for c in ids],
                         "row_index": range(2, 2 + len(ids)), "error_stage": None, "error_type": None,
                         "error_message": None, "out_dir": str(out)})


def test_skip_rules(tmp_path: Path):
    out = tmp_path
    (out / "clips").mkdir()
    rows = _manifest_rows(out, ["done", "changed", "failed", "lost", "new"])
    prior = pd.DataFrame({
        "clip_id": ["done", "changed", "failed", "lost"],
        "status": ["ok", "ok", "failed", "ok"],
        "fingerprint": ["fp-done", "fp-OLD", "fp-failed", "fp-lost"],
        "error_message": [None, None, "no face", None], "error_stage": [None, None, "face_crop", None],
        "t_render": [3.0, 3.0, None, 3.0], "frames": [25, 25, None, 25]})
    clip_output_path(out, "done").write_bytes(b"mp4")
    clip_output_path(out, "changed").write_bytes(b"mp4")  # "lost" has no output any more
    sel = select(rows, prior, out)
    assert sorted(sel.todo["clip_id"]) == ["changed", "lost", "new"]
    settled = sel.settled.set_index("clip_id")
    assert settled.loc["done", "status"] == "skipped" and settled.loc["done", "t_render"] == 3.0
    assert settled.loc["failed", "status"] == "failed" and settled.loc["failed", "error_message"] == "no face"
    retry = select(rows, prior, out, retry_failed=True)
    assert sorted(retry.todo["clip_id"]) == ["changed", "failed", "lost", "new"]
    forced = select(rows, prior, out, only=["done", "ghost"])
    assert list(forced.todo["clip_id"]) == ["done"] and forced.unknown_only_ids == ("ghost",)
    assert len(forced.unselected) == 4
    limited = select(rows, prior, out, limit=1)
    assert list(limited.todo["clip_id"]) == ["changed"]
    assert set(limited.unselected.set_index("clip_id")["status"]) == {"pending"}


def test_shards_partition_the_manifest_deterministically(tmp_path: Path):
    ids = [f"clip_{i:03d}" for i in range(200)]
    rows = _manifest_rows(tmp_path, ids)
    empty = pd.DataFrame({"clip_id": []})
    parts = [set(select(rows, empty, tmp_path, shard=(i, 3)).todo["clip_id"]) for i in range(3)]
    assert set().union(*parts) == set(ids) and sum(map(len, parts)) == len(ids)
    assert all(40 < len(p) < 95 for p in parts)
    assert shard_of("clip_007", 3) == shard_of("clip_007", 3)
    # the shard of a clip does not depend on the process (no Python hash randomisation)
    code = "import sys; sys.path.insert(0, %r); from pipeline.plan import shard_of; print(shard_of('clip_007', 3))" % str(REPO)
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": "123"})
    assert int(other.stdout) == shard_of("clip_007", 3)
    with pytest.raises(ValueError, match="0 to n-1"):
        parse_shard("3/3")

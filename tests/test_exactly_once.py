"""Exactly once: ``kill -9`` of the whole ``fixtalk run`` at every stage boundary, then the same
command again, until every clip is done. A clip whose MP4 was renamed into ``OUT/clips`` is never
rendered again (same inode, same mtime): the mux stage's receipt records it as it is delivered,
and the rerun only runs the stages after mux for it (``stages/media/receipt.py``).

One clip per boundary: clip *k* is killed right after stage *k* (a kill switch from
``tests/toy_stages.py`` between the real stages, engine=local so the driver and the stages share
one process group, which is killed whole). Real stages, real media, the session's tiny checkpoint.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipeline.ledger import latest, read_ledger
from tests.conftest import astronaut_portrait, make_speech, save_png
from tests.toy_stages import KILL_AFTER

REPO = Path(__file__).resolve().parents[1]
BOUNDARIES = list(KILL_AFTER)  # after speech, ingest, align, face_crop, adapt, motion, render, mux, qc
FAST = ["mux.preset=ultrafast", "qc.sample_every=10", "render.batch_size=16", "adapt.enabled=false",
        "run.engine=local"]


def _stages() -> str:
    entries = []
    for name in BOUNDARIES:
        entries += [name, f"tests.toy_stages:{KILL_AFTER[name].__name__}"]
    return "run.stages=[" + ",".join(entries) + "]"


def _clip_files(out: Path) -> dict[str, tuple[int, int]]:
    """clip_id -> (inode, mtime_ns) of every delivered MP4."""
    return {p.stem: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (out / "clips").glob("*.mp4")}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("once_media")
    save_png(d / "face.png", astronaut_portrait(160))
    make_speech(d / "hi.wav", "Hi there.", speed=220)
    rows = [{"clip_id": f"k{i}_{name}", "portrait": "face.png", "audio": "hi.wav", "script": "Hi there.",
             "toy_kill_after": name} for i, name in enumerate(BOUNDARIES)]
    path = d / "once.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_a_delivered_clip_is_never_rendered_again_whatever_boundary_the_run_is_killed_at(
        manifest, tiny_checkpoint, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pipeline.cli", "run", str(manifest), "--out", str(out),
           "--checkpoint", str(tiny_checkpoint), "--set", _stages()] + [a for s in FAST for a in ("--set", s)]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    delivered: dict[str, tuple[int, int]] = {}
    for attempt, boundary in enumerate(BOUNDARIES):
        res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
                             start_new_session=True)  # its own process group: the kill takes it whole
        assert res.returncode == -signal.SIGKILL, (boundary, res.returncode, res.stderr[-3000:])
        clip = f"k{attempt}_{boundary}"
        assert (out / "work" / clip / f"killed-after-{boundary}").is_file()
        now = _clip_files(out)
        for done, stamp in delivered.items():  # nothing delivered before was touched again
            assert now[done] == stamp, (done, boundary)
        after_mux = BOUNDARIES.index(boundary) >= BOUNDARIES.index("mux")
        assert (clip in now) == after_mux, (clip, sorted(now))  # killed before the rename: nothing visible
        assert not [p.name for p in (out / "clips").iterdir() if p.name.startswith(".")]  # no partial file
        delivered = now

    final = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
                           start_new_session=True)
    assert final.returncode == 0, final.stderr[-3000:]
    now = _clip_files(out)
    assert sorted(now) == sorted(f"k{i}_{b}" for i, b in enumerate(BOUNDARIES))
    for done, stamp in delivered.items():
        assert now[done] == stamp, f"{done} was rendered again"
    assert "finishing 1 delivered but not checked" in final.stderr
    records = latest(read_ledger(out)).set_index("clip_id")
    assert set(records["status"]) == {"ok"}
    assert records["qc_status"].notna().all()  # the clips killed in or after QC were checked on the rerun
    for clip in ("k7_mux", "k8_qc"):
        assert records.loc[clip, "output_path"] == str(out / "clips" / f"{clip}.mp4")
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["counts"]["ok"] + run_json["counts"]["skipped"] == len(BOUNDARIES)
    assert not [p.name for p in (out / "clips").iterdir() if p.name.startswith(".tmp")]

"""A real multi-node run: a Ray cluster of two nodes on this machine (Ray's cluster utilities:
one head and one more raylet with its own resources), ``fixtalk run --address`` from a driver
outside both, and the results show, per clip, the node each stage ran on (``node_<stage>``).
Then the second node is killed (its raylet and workers, ``kill -9``) while clips are in flight.

``make test-cluster`` runs this file alone.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import astronaut_portrait, make_speech, save_png

REPO = Path(__file__).resolve().parents[1]
FAST = ["mux.preset=ultrafast", "qc.sample_every=10", "render.batch_size=16", "adapt.enabled=false"]
STAGES = ("speech", "ingest", "align", "face_crop", "motion", "render", "mux", "qc")


#: A user's shell: none of the RAY_* variables a Ray session of the test process has set.
ENV = {**{k: v for k, v in os.environ.items() if not k.startswith("RAY_")}, "HF_HUB_OFFLINE": "1"}


class TwoNodes:
    """The cluster of :mod:`tests.two_node_cluster`, driven through its stdin."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.two_node_cluster"], cwd=REPO,
                                     env=ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        info = json.loads(self.proc.stdout.readline())
        self.address, self.head, self.second = info["address"], info["head"][:12], info["second"][:12]

    def remove_second(self) -> None:
        self.proc.stdin.write("remove-second\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "removed"

    def close(self) -> None:
        try:
            self.proc.communicate("quit\n", timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture
def two_nodes():
    cluster = TwoNodes()
    try:
        yield cluster
    finally:
        cluster.close()


def _command(tmp_path: Path, address: str, checkpoint: Path, n: int) -> tuple[list[str], Path]:
    media = tmp_path / "media"
    media.mkdir(exist_ok=True)
    save_png(media / "face.png", astronaut_portrait(160))
    make_speech(media / "hi.wav", "Hi there.", speed=220)
    rows = [{"clip_id": f"c{i}", "portrait": "face.png", "audio": "hi.wav", "script": "Hi there."}
            for i in range(n)]
    pd.DataFrame(rows).to_csv(media / "m.csv", index=False)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pipeline.cli", "run", str(media / "m.csv"), "--out", str(out),
           "--address", address, "--checkpoint", str(checkpoint)]
    return cmd + [a for s in FAST for a in ("--set", s)], out




def test_a_run_on_a_two_node_cluster_uses_both_nodes(two_nodes, tiny_checkpoint, tmp_path):
    cluster = two_nodes
    cmd, out = _command(tmp_path, cluster.address, tiny_checkpoint, 4)
    res = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    results = pd.read_parquet(out / "results.parquet")
    assert list(results["status"]) == ["ok"] * 4
    nodes = {name: set(results[f"node_{name}"]) for name in STAGES}
    used = set().union(*nodes.values())
    assert used <= {cluster.head, cluster.second}, used  # Ray workers only, never the driver's host
    assert cluster.second in used, nodes  # some stage actors ran on the second node
    for clip in results.itertuples():
        assert (out / "clips" / f"{clip.clip_id}.mp4").is_file()


def test_losing_a_node_mid_run_loses_no_finished_clip_and_a_rerun_completes(two_nodes, tiny_checkpoint,
                                                                           tmp_path):
    cluster = two_nodes
    cmd, out = _command(tmp_path, cluster.address, tiny_checkpoint, 8)
    cmd += ["--set", "run.node_loss_grace_s=30"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 600
    while not list((out / "clips").glob("c*.mp4")):  # clips are in flight once the first is out
        assert proc.poll() is None and time.monotonic() < deadline, "no clip was delivered"
        time.sleep(0.2)
    cluster.remove_second()  # SIGKILL of its raylet and workers
    _, err = proc.communicate(timeout=900)
    # either the remaining node finished the run, or it stopped as a systemic error
    assert proc.returncode in (0, 1), err[-3000:]
    first = {p.stem: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (out / "clips").glob("*.mp4")}
    assert first and not [p.name for p in (out / "clips").iterdir() if p.name.startswith(".")]

    again = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    results = pd.read_parquet(out / "results.parquet")
    assert set(results["status"]) <= {"ok", "skipped"} and len(results) == 8
    for clip, stamp in first.items():  # nothing delivered before the loss was rendered again
        path = out / "clips" / f"{clip}.mp4"
        assert (path.stat().st_ino, path.stat().st_mtime_ns) == stamp, clip

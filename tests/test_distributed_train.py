"""``fixtalk train --workers 2`` on Ray Train, with real Ray and real processes (no mocks).

Every stage (base, lip_pose, exp, fixtalk with its GAN and lazy R1 term, audio2lip with its
BatchNorm) runs a few steps on 2 CPU workers (global batch 4 = 2 x 2) and must give the loss log
and weights of one process with the same global batch. The runs train in float64
(``TrainConfig.dtype``) so that the comparison is tight: measured, the loss logs agree to ~2e-12
(relative) and the weights to ~3e-8, all in parameters whose true gradient is zero (conv biases
before BatchNorm, whose rounding noise Adam normalises); float32 runs drift apart by ~1e-5 per
step (docs/training.md). The 2-worker run loses a worker and then its driver (SIGKILL to the
driver's process group) on the way, and still ends where the uninterrupted run ends. The drivers
are subprocesses started the way a user starts them (``python -m pipeline.cli train``), without
the RAY_* variables of this process.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from fixtalk.config import StageConfig
from tests.train_common import MODEL_OVERRIDE, _config, _trainer, data_root  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
STAGES = [
    StageConfig(name="base", steps=3, batch_size=4, lr=2e-3, mouth=1.0, track=1.0, flow=5.0, mask=1.0, copy=1.0),
    StageConfig(name="lip_pose", steps=3, batch_size=4, lr=2e-3, mouth=1.0),
    StageConfig(name="exp", steps=2, batch_size=4, lr=2e-3),
    StageConfig(name="fixtalk", steps=4, batch_size=4, lr=1e-3, dis=0.5, d_mem=0.5, align=0.5, gan=0.1,
                r1_every=2),
    StageConfig(name="audio2lip", steps=3, batch_size=4, window=3, lr=2e-3),
]
LOSS_RTOL = 1e-9  # float64 runs (measured: 2e-12)
WEIGHT_ATOL = 1e-6  # float64 runs (measured: 3e-8, in zero-gradient biases)


def _cfg(**kw):
    return _config(STAGES, dtype="float64", checkpoint_steps=2, disc_stddev_group=2, **kw)


def _driver(cfg_path: Path, data: Path, out: Path, log: Path, *extra: str) -> subprocess.Popen:
    """``fixtalk train --workers 2`` as a user runs it: own process group, no RAY_* of this session."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["HF_HUB_OFFLINE"] = "1"
    cmd = [sys.executable, "-m", "pipeline.cli", "train", "--config", str(cfg_path), "--data", str(data),
           "--out", str(out), "--workers", "2", *extra]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log.open("a"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _position(out: Path) -> tuple[int, int]:
    path = out / "train_state.pt"
    if not path.is_file():
        return (-1, -1)
    st = torch.load(path, weights_only=True)
    return (st["stage_index"], st["stage_step"])


def _rows(out: Path) -> list[dict]:
    with open(out / "loss_log.csv") as f:
        return list(csv.DictReader(f))


def _assert_same_run(reference: Path, run: Path) -> None:
    """Loss log row by row, term by term, and the final model and discriminator (train_state.pt)."""
    ref_rows, rows = _rows(reference), _rows(run)
    assert [(r["stage"], r["step"]) for r in rows] == [(r["stage"], r["step"]) for r in ref_rows]
    skip = {"global_step", "stage", "step", "elapsed_min"}
    for a, b in zip(ref_rows, rows):
        assert {k for k in a if a[k] and k not in skip} == {k for k in b if b[k] and k not in skip}, (a, b)
        for k in a:
            if k not in skip and a[k]:
                assert float(b[k]) == pytest.approx(float(a[k]), rel=LOSS_RTOL), (a["stage"], a["step"], k)
    ref, got = (torch.load(p / "train_state.pt", weights_only=True) for p in (reference, run))
    for part in ("model", "disc"):
        for k, v in ref[part].items():
            if v.is_floating_point():
                assert torch.allclose(got[part][k], v, rtol=0, atol=WEIGHT_ATOL), f"{part} {k}"
    assert got["stage_index"] == len(STAGES)


@pytest.fixture(scope="module")
def single(data_root, tmp_path_factory) -> Path:  # noqa: F811
    """The reference: the same config in this process (world size 1, no Ray)."""
    out = tmp_path_factory.mktemp("single")
    trainer = _trainer(data_root, out, _cfg())
    trainer.run()
    return out


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    from dataclasses import asdict

    path = tmp_path_factory.mktemp("cfg") / "train.yaml"
    raw = asdict(_cfg())
    raw["model"] = MODEL_OVERRIDE
    path.write_text(yaml.safe_dump(raw))
    return path


def _wait_gone(pids: list[int], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while any(Path(f"/proc/{pid}").exists() for pid in pids):
        assert time.monotonic() < deadline, f"workers {pids} outlived their driver"
        time.sleep(0.2)


def _worker_pids(out: Path) -> list[int]:
    return [json.loads((out / "workers" / f"rank{r}.json").read_text())["pid"] for r in (0, 1)]


def test_two_workers_match_one_process_through_a_lost_worker_and_a_killed_driver(
        single, config_file, data_root, tmp_path):  # noqa: F811
    """One 2-worker run, interrupted twice, against the uninterrupted single-process run: a worker
    is SIGKILLed at the first checkpoint seen from lip_pose step 2 on (Ray Train restarts the
    worker group, which resumes from it), then the driver's process group at a later checkpoint
    inside a stage (its workers die with it, after at most finishing what they were doing); the
    same command again resumes from the last checkpoint and finishes. Loss log and weights must
    match."""
    out, log = tmp_path / "run", tmp_path / "driver.log"
    proc = _driver(config_file, data_root, out, log, "--max-failures", "1")
    try:
        deadline = time.monotonic() + 420
        while _position(out) < (1, 2):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        first = _worker_pids(out)
        assert first[0] != first[1]
        os.kill(first[1], signal.SIGKILL)
        killed_at = _position(out)
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            pos, pids = _position(out), _worker_pids(out)
            # a mid-stage checkpoint of the new group (the fixtalk stage's at the latest)
            if pids[1] != first[1] and pos > killed_at and (pos[1] > 0 or pos >= (len(STAGES) - 1, 0)):
                break
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        _wait_gone(pids)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    stopped_at = _position(out)
    assert stopped_at[0] < len(STAGES), f"the run finished before the driver was killed ({stopped_at})"
    assert f"stage {killed_at[0]} step {killed_at[1]}" in log.read_text()  # the new group resumed
    rerun_log = tmp_path / "rerun.log"
    rerun = _driver(config_file, data_root, out, rerun_log)
    assert rerun.wait(timeout=600) == 0, rerun_log.read_text()[-3000:]
    assert f"resumed from {out / 'train_state.pt'}: stage {stopped_at[0]} step {stopped_at[1]}" in rerun_log.read_text()
    _assert_same_run(single, out)
    # every stage trained, the GAN with its R1 term, Audio2Lip's BatchNorm learned statistics
    rows = _rows(out)
    assert {r["stage"] for r in rows} == {s.name for s in STAGES}
    assert any(r.get("r1") for r in rows) and any(r.get("d_loss") for r in rows)
    init = _trainer(data_root, tmp_path / "fresh", _cfg()).model.state_dict()
    bn = "audio2lip.audio_encoder.0.conv_block.1.running_mean"
    assert not torch.allclose(torch.load(out / "train_state.pt", weights_only=True)["model"][bn], init[bn])
    # the comparison can fail: one worker's share alone (batch 2) is another run
    alone = _trainer(data_root, tmp_path / "alone", _config(
        [StageConfig(**{**STAGES[0].__dict__, "batch_size": 2})], dtype="float64", log_every=1))
    alone.run()
    assert abs(alone.rows[-1]["loss"] - float(rows[2]["loss"])) > 1e-4


def test_worker_shares_make_up_the_single_process_batches():
    """One worker draws exactly the batches of a shuffled drop_last DataLoader on the same
    generator; the shares of 2 workers interleave into those same batches; a global batch that
    does not split evenly is refused by name."""
    from torch.utils.data import DataLoader

    from fixtalk.train.sharding import RankBatchSampler

    def batches(sampler_or_none, epochs=2):
        gen = torch.Generator().manual_seed(3)
        if sampler_or_none is None:
            loader = DataLoader(range(11), batch_size=4, shuffle=True, drop_last=True, generator=gen)
        else:
            loader = DataLoader(range(11), batch_sampler=sampler_or_none(gen), generator=gen)
        return [b.tolist() for _ in range(epochs) for b in loader]

    plain = batches(None)
    assert batches(lambda g: RankBatchSampler(11, 4, g)) == plain and len(plain) == 4
    shares = [batches(lambda g, r=r: RankBatchSampler(11, 4, g, rank=r, size=2)) for r in (0, 1)]
    assert [[b0[0], b1[0], b0[1], b1[1]] for b0, b1 in zip(*shares)] == plain
    with pytest.raises(ValueError, match="batch_size 4 .* multiple of the number of workers \\(3\\)"):
        RankBatchSampler(11, 4, torch.Generator(), rank=0, size=3)

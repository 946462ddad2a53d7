"""fixtalk.train: every stage learns, checkpoints resume exactly, synthetic mouths follow visemes,
and ``fixtalk train`` writes its outputs.

Real inputs throughout: a tiny synthetic data set is built by ``fixtalk.train.synthetic.build``
from the public-domain astronaut portrait and one espeak-ng utterance force-aligned by
pocketsphinx (32x32 frames), and a 32x32 FixTalk (EMI + EDI at 16x16) is trained on it on CPU.
"""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fixtalk.config import StageConfig, TrainConfig

SIZE = 32
# 32x32 FixTalk: style_dim 64 >= lip + pose + exp directions (36); EMI/EDI at the 16x16 level
MODEL_OVERRIDE = {
    "size": SIZE, "style_dim": 64, "channels": {4: 32, 8: 32, 16: 32, 32: 16},
    "audio2lip": {"widths": (8, 8, 16, 16, 32), "embed_dim": 32},
    "emi": {"level": 16, "heads": 2}, "edi": {"level": 16, "slots": 8, "heads": 2},
}
SENTENCE = "open your mouth and say ah"


def _config(stages: list[StageConfig], **kw) -> TrainConfig:
    base = dict(preset="tiny", model=MODEL_OVERRIDE, stages=stages, seed=0, device="cpu",
                num_threads=1, checkpoint_minutes=0, log_every=1)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """Two training clips (astronaut, augmented) of one espeak-ng utterance, 32x32."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    pytest.importorskip("pocketsphinx")
    from fixtalk.train import synthetic
    from fixtalk.train.speech import Utterance, align_phones, espeak

    audio = espeak(SENTENCE, "en-us", 170, 50)
    utt = Utterance(audio, SENTENCE, "espeak-ng en-us", "espeak-ng output", align_phones(audio, SENTENCE))
    root = tmp_path_factory.mktemp("train_data")
    written = synthetic.build(root, clips=2, size=SIZE, eval_clips=0, seed=0, log=lambda s: None,
                              utterances={"train": [utt]})
    assert len(written) == 2
    return root


def _trainer(data_root: Path, out: Path, cfg: TrainConfig):
    from fixtalk.train.trainer import Trainer

    return Trainer(cfg, data_root, out, log=lambda s: None)


def _overfit(trainer, st: StageConfig, steps: int) -> tuple[list[float], list[str], dict, dict]:
    """Train one stage on ONE fixed batch exactly as the trainer does; losses per step, the loss
    term names and the parameters before/after."""
    from fixtalk.train.stage_steps import STAGE_FUNCTIONS, StepContext, set_stage_mode

    model = trainer.model
    set_stage_mode(model, st.name)
    opt, _ = trainer._optimizers(st)
    batch = next(trainer._loader(st))
    ctx = StepContext(model=model, perceptual=trainer.perceptual)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    losses = []
    for _ in range(steps):
        terms, _ = STAGE_FUNCTIONS[st.name](ctx, batch, st)
        loss = sum(terms.values())
        assert torch.isfinite(loss), (st.name, {k: float(v) for k, v in terms.items()})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():  # the loss after the last update
        terms, _ = STAGE_FUNCTIONS[st.name](ctx, batch, st)
        losses.append(float(sum(terms.values())))
    after = {k: v.detach().clone() for k, v in model.named_parameters()}
    return losses, list(terms), before, after


STAGES = [
    StageConfig(name="base", batch_size=2, lr=2e-3, mouth=1.0),
    StageConfig(name="lip_pose", batch_size=2, lr=2e-3, mouth=1.0),
    StageConfig(name="exp", batch_size=2, lr=2e-3, mouth=1.0),
    StageConfig(name="fixtalk", batch_size=2, lr=2e-3, mouth=1.0, dis=0.5, d_mem=0.5, align=0.5),
    StageConfig(name="audio2lip", batch_size=2, window=3, lr=2e-3, mouth=1.0),
]


def test_each_stage_lowers_its_loss_on_a_fixed_batch(data_root, tmp_path):
    trainer = _trainer(data_root, tmp_path / "run", _config(STAGES))
    changed_by = {}
    for st in STAGES:
        losses, terms, before, after = _overfit(trainer, st, steps=8)
        assert any(k.endswith("mouth") for k in terms), f"{st.name}: no mouth-box term in {sorted(terms)}"
        assert losses[-1] < 0.9 * losses[0], f"stage {st.name}: loss {losses[0]:.4f} -> {losses[-1]:.4f} ({losses})"
        changed_by[st.name] = {k for k in before if not torch.equal(before[k], after[k])}
    # each stage trains what it names and nothing else
    assert changed_by["audio2lip"] and all(k.startswith("audio2lip.") for k in changed_by["audio2lip"])
    assert changed_by["exp"] and all(k.startswith(("exp_fc.", "direction_exp.", "dec.fineadainresblock."))
                                     for k in changed_by["exp"])
    for name in ("base", "lip_pose", "fixtalk"):
        assert not any(k.startswith("audio2lip.") for k in changed_by[name]), name
        assert any(k.startswith("enc.") for k in changed_by[name]), name
    assert any(k.startswith(("emi.", "edi.")) for k in changed_by["fixtalk"])
    # Audio2Lip trained in train mode: its BatchNorm learned running statistics for inference
    bn = trainer.model.audio2lip.audio_encoder[0].conv_block[1]
    assert bn.num_batches_tracked.item() > 0 and not torch.all(bn.running_mean == 0)


def test_checkpoint_mid_stage_resumes_to_identical_weights(data_root, tmp_path):
    from fixtalk.train.trainer import STATE_FILE, Trainer

    stages = [StageConfig(name="base", steps=2, batch_size=2, lr=2e-3),
              StageConfig(name="fixtalk", steps=4, batch_size=2, lr=1e-3, gan=0.1, gan_start=0)]
    cfg = _config(stages, checkpoint_steps=2)

    straight = _trainer(data_root, tmp_path / "straight", cfg)
    straight.run()

    class Killed(Exception):
        pass

    class StopAfterCheckpoint(Trainer):
        """Dies right after the mid-stage checkpoint of stage 2, step 2 (like a kill -9)."""

        def save_state(self, opt=None, d_opt=None):
            path = super().save_state(opt, d_opt)
            if self.stage_index == 1 and self.stage_step == 2 and opt is not None:
                raise Killed
            return path

    out = tmp_path / "resumed"
    with pytest.raises(Killed):
        StopAfterCheckpoint(cfg, data_root, out, log=lambda s: None).run()
    assert (out / STATE_FILE).is_file()
    half = _trainer(data_root, out, cfg)
    assert (half.stage_index, half.stage_step, half.global_step) == (1, 2, 4)
    # the run that never stopped differs from the checkpoint (the test can fail)
    assert any(not torch.equal(a, b) for a, b in zip(straight.model.state_dict().values(),
                                                     half.model.state_dict().values()))
    half.run()
    for (k, a), b in zip(straight.model.state_dict().items(), half.model.state_dict().values()):
        assert torch.equal(a, b), f"{k} differs after resume"
    for (k, a), b in zip(straight.disc.state_dict().items(), half.disc.state_dict().values()):
        assert torch.equal(a, b), f"discriminator {k} differs after resume"
    assert [r["loss"] for r in straight.rows] == [r["loss"] for r in half.rows]


def _perpendicular_gap(lm: np.ndarray) -> float:
    """Mean inner-lip gap (pixels) measured perpendicular to the eye line (head roll removed)."""
    e = lm[42:48].mean(0) - lm[36:42].mean(0)
    e = e / np.linalg.norm(e)
    n = np.array([-e[1], e[0]])
    return float(np.mean([(lm[lo] - lm[up]) @ n for up, lo in ((61, 67), (62, 66), (63, 65))]))


def test_driving_frame_mouth_opens_exactly_when_its_viseme_says_so():
    from fixtalk.train import synthetic
    from fixtalk.train.speech import CLOSED_VISEMES, Utterance
    from stages.faces import detect_faces, mouth_opening

    # known phone timings: closed (silence, M, P, B) and open (AA, IY, F, OW) visemes
    phones = [("SIL", 0.0, 0.2), ("M", 0.2, 0.36), ("AA", 0.36, 0.6), ("P", 0.6, 0.72),
              ("IY", 0.72, 0.92), ("F", 0.92, 1.04), ("OW", 1.04, 1.3), ("B", 1.3, 1.42),
              ("AA", 1.42, 1.7), ("SIL", 1.7, 2.0)]
    utt = Utterance(np.zeros(32000, np.float32), "mapi fob a", "test", "n/a", phones)
    frames, lms, _, meta = synthetic.make_clip(synthetic.load_portrait("astronaut"), utt, 128,
                                               np.random.default_rng(1), augment=False)
    labels = meta["visemes"]
    assert len(labels) == len(frames) == len(lms)
    assert {"sil", "PBM", "AA", "IY", "FV", "OW"} <= set(labels)
    gaps = np.array([_perpendicular_gap(lm) for lm in lms])
    closed = np.array([v in CLOSED_VISEMES for v in labels])
    # landmarks of the generated frames: shut (< 0.1 px) exactly on closed visemes, open elsewhere
    assert np.all(np.abs(gaps[closed]) < 0.1), gaps[closed].max()
    assert np.all(gaps[~closed] > 1.0), gaps[~closed].min()
    # the image shows it: dlib's landmarks on the rendered pixels, widest AA frame vs closed frames
    aa = [i for i, v in enumerate(labels) if v == "AA"]
    wide = aa[int(np.argmax(gaps[aa]))]
    shut = [i for i, v in enumerate(labels) if v == "PBM"][:2] + [0]
    def opening(i):
        faces = detect_faces(frames[i], upsample=1)
        assert len(faces) == 1, f"frame {i}: {len(faces)} faces"
        return mouth_opening(faces[0].landmarks)
    assert opening(wide) > 0.22
    assert max(opening(i) for i in shut) < 0.13


def test_fixtalk_train_cli_writes_model_and_loss_log(data_root, tmp_path):
    import yaml

    from fixtalk.checkpoints import load_model
    from pipeline.cli import main

    cfg = {"preset": "tiny", "model": MODEL_OVERRIDE, "seed": 0, "num_threads": 1, "log_every": 1,
           "stages": [{"name": n, "steps": 1, "batch_size": 2, "lr": 1e-3,
                       **({"window": 3} if n == "audio2lip" else {}),
                       **({"gan": 0.1} if n == "fixtalk" else {})}
                      for n in ("base", "lip_pose", "exp", "fixtalk", "audio2lip")]}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    code = main(["train", "--config", str(tmp_path / "c.yaml"), "--data", str(data_root),
                 "--out", str(out), "--device", "cpu"])
    assert code == 0
    model = load_model(out / "model.pt")
    assert model.cfg.size == SIZE and model.training_record["steps"] == 5
    with open(out / "loss_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["stage"] for r in rows] == ["base", "lip_pose", "exp", "fixtalk", "audio2lip"]
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    assert rows[3]["d_loss"] not in ("", None)  # the fixtalk stage ran its discriminator
    assert (out / "loss_log.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a bad config is refused with a message naming the key
    (tmp_path / "bad.yaml").write_text("stages:\n  - {name: base, stepz: 3}\n")
    with pytest.raises(ValueError, match="stepz"):
        main(["train", "--config", str(tmp_path / "bad.yaml"), "--data", str(data_root),
              "--out", str(tmp_path / "bad")])

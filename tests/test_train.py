"""fixtalk.train: every stage learns, checkpoints resume exactly, synthetic mouths follow visemes,
and ``fixtalk train`` writes its outputs.

Real inputs throughout: a tiny synthetic data set is built by ``fixtalk.train.synthetic.build``
from the public-domain astronaut portrait and one espeak-ng utterance force-aligned by
pocketsphinx (32x32 frames), and a 32x32 FixTalk (EMI + EDI at 16x16) is trained on it on CPU.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from fixtalk.config import StageConfig
from tests.train_common import (
    MODEL_OVERRIDE,
    SIZE,
    _config,
    _overfit,
    _trainer,
    data_root,  # noqa: F401  (module-scoped fixture)
)

STAGES = [
    StageConfig(name="base", batch_size=2, lr=2e-3, mouth=1.0, flow=5.0, mask=1.0, copy=1.0, flow_lr_mult=3.0),
    StageConfig(name="lip_pose", batch_size=2, lr=2e-3, mouth=1.0, flow=5.0),
    StageConfig(name="exp", batch_size=2, lr=2e-3, mouth=1.0),
    StageConfig(name="fixtalk", batch_size=2, lr=2e-3, mouth=1.0, dis=0.5, d_mem=0.5, align=0.5, mask=1.0,
                mask_mouth=1.0),
    StageConfig(name="audio2lip", batch_size=2, window=3, lr=2e-3, mouth=1.0),
]


def test_each_stage_lowers_its_loss_on_a_fixed_batch(data_root, tmp_path):
    trainer = _trainer(data_root, tmp_path / "run", _config(STAGES))
    changed_by = {}
    for st in STAGES:
        losses, terms, before, after = _overfit(trainer, st, steps=8)
        assert any(k.endswith("mouth") for k in terms), f"{st.name}: no mouth-box term in {sorted(terms)}"
        assert ("flow" in terms) == bool(st.flow) and ("mask" in terms) == bool(st.mask), (st.name, terms)
        assert ("copy" in terms) == bool(st.copy), (st.name, terms)
        assert ("mask_mouth" in terms) == bool(st.mask_mouth), (st.name, terms)
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
    from fixtalk.measure.faces import detect_faces, mouth_opening
    from fixtalk.train import synthetic
    from fixtalk.train.speech import CLOSED_VISEMES, Utterance

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


def test_r1_keeps_the_discriminator_smooth_on_real_images(data_root):
    """The StyleGAN2 R1 penalty: a discriminator trained to tell real frames from blurred ones
    ends with a much smaller input gradient on the real frames than one trained without it."""
    import torch.nn.functional as F

    from fixtalk.train.data_format import TalkingFaceDataset
    from fixtalk.train.discriminator import Discriminator
    from fixtalk.train.losses import d_logistic, r1_penalty

    ds = TalkingFaceDataset(data_root, with_mel=False)
    real = torch.stack([ds[i]["driving"][0] for i in range(0, len(ds), max(1, len(ds) // 4))][:4])
    fake = F.avg_pool2d(real, 3, 1, 1)
    final = {}
    for gamma in (0.0, 10.0):
        torch.manual_seed(0)
        disc = Discriminator(SIZE, base=8)
        opt = torch.optim.Adam(disc.parameters(), lr=2e-3, betas=(0.0, 0.99))
        for _ in range(30):
            loss = d_logistic(disc(real), disc(fake))
            if gamma:
                loss = loss + 0.5 * gamma * r1_penalty(disc, real)
            opt.zero_grad()
            loss.backward()
            opt.step()
        final[gamma] = float(r1_penalty(disc, real))
    assert final[10.0] < 0.2 * final[0.0], final


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
    assert float(rows[3]["r1"]) > 0  # with the R1 penalty (its first step is an R1 step)
    assert (out / "loss_log.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a further phase starts from this run's model (--init with our own checkpoint): lr 0 keeps it
    cfg["stages"] = [{"name": "base", "steps": 1, "batch_size": 2, "lr": 0.0}]
    (tmp_path / "c2.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", "--config", str(tmp_path / "c2.yaml"), "--data", str(data_root), "--out",
                 str(tmp_path / "run2"), "--device", "cpu", "--init", str(out / "model.pt")]) == 0
    again = load_model(tmp_path / "run2" / "model.pt").state_dict()
    assert all(torch.equal(v, again[k]) for k, v in model.state_dict().items() if v.is_floating_point())
    # a bad config is refused with a message naming the key
    (tmp_path / "bad.yaml").write_text("stages:\n  - {name: base, stepz: 3}\n")
    with pytest.raises(ValueError, match="stepz"):
        main(["train", "--config", str(tmp_path / "bad.yaml"), "--data", str(data_root),
              "--out", str(tmp_path / "bad")])


def test_warp_target_rebuilds_the_driving_frame_from_the_source():
    """The landmark warp target (train.warp_targets) applied to a synthetic source frame with
    grid_sample reproduces the driving frame outside the open mouth far better than copying, and
    its mouth mask is non-zero exactly when the driver's mouth is open."""
    import torch.nn.functional as F

    from fixtalk.train import synthetic
    from fixtalk.train.face_warp import inner_gaps
    from fixtalk.train.speech import Utterance
    from fixtalk.train.warp_targets import warp_target

    phones = [("SIL", 0.0, 0.3), ("AA", 0.3, 0.9), ("M", 0.9, 1.1), ("OW", 1.1, 1.6), ("SIL", 1.6, 2.0)]
    utt = Utterance(np.zeros(32000, np.float32), "ah mo", "test", "n/a", phones)
    frames, lms, _, _ = synthetic.make_clip(synthetic.load_portrait("astronaut"), utt, 128,
                                            np.random.default_rng(3), augment=False)
    as_t = lambda f: torch.from_numpy(f).permute(2, 0, 1)[None].float() / 127.5 - 1
    gains = []
    for s, d in ((0, 12), (5, 35), (40, 20)):
        flow, mouth = warp_target(lms[s], lms[d], 128)
        assert flow.shape == (2, 128, 128) and mouth.shape == (1, 128, 128)
        assert (mouth.sum() > 5) == (inner_gaps(lms[d]).max() > 1.0)
        warped = F.grid_sample(as_t(frames[s]), torch.from_numpy(flow).permute(1, 2, 0)[None],
                               align_corners=False, padding_mode="border")
        keep = 1 - torch.from_numpy(mouth)[None]
        err = lambda x: float((((x - as_t(frames[d])) ** 2) * keep).sum() / (3 * keep.sum()))
        psnr = lambda x: 10 * np.log10(4 / max(err(x), 1e-10))
        assert psnr(warped) > 22, (s, d, psnr(warped))
        gains.append(psnr(warped) - psnr(as_t(frames[s])))
    assert min(gains) > 2 and np.mean(gains) > 4, gains

    # the mask terms: an all-open mask (logit +20) meets `mask` (1 outside the mouth) and misses
    # `mask_mouth` (0 inside) by ~1 exactly where the driver's mouth is open
    from fixtalk.train.warp_targets import warp_loss

    flow, mouth = (torch.from_numpy(x)[None] for x in warp_target(lms[5], lms[35], 128))
    assert mouth.sum() > 5
    logits = [torch.cat([torch.zeros(1, 2, r, r), torch.full((1, 1, r, r), 20.0)], 1) for r in (32, 64, 128)]
    terms = warp_loss(logits, flow, mouth, torch.tensor([True]), 0.0, 1.0, 1.0)
    assert float(terms["mask"]) < 1e-6 and 0.5 < float(terms["mask_mouth"]) < 0.7  # 2 of 3 levels
    assert set(warp_loss(logits, flow, mouth, torch.tensor([True]), 0.0, 1.0)) == {"mask"}


def test_colour_augment_is_one_transform_per_item_for_source_and_driver(data_root):
    """Identity colour augmentation: the source and driving frames of an item get the same colour
    transform (a pixel equal in both stays equal), items differ, grey stays on the grey axis."""
    from fixtalk.train.colour import random_colour_transform
    from fixtalk.train.data_format import TalkingFaceDataset

    plain = TalkingFaceDataset(data_root, with_mel=False)
    aug = TalkingFaceDataset(data_root, with_mel=False, colour_augment=True)
    means = []
    for i in range(0, len(plain), max(1, len(plain) // 6)):
        p, a = plain[i], aug[i]
        assert torch.equal(p["landmarks"], a["landmarks"]) and p["source"].shape == a["source"].shape
        same = (p["source"] - p["driving"][0]).abs().amax(0) < 1e-6
        assert same.sum() > 20  # the fixed image border
        assert torch.allclose(a["source"][:, same], a["driving"][0][:, same], atol=1e-5)
        means.append(a["source"].mean((1, 2)))
    assert torch.stack(means).std(0).max() > 0.05  # the palette changes from item to item
    rng = np.random.default_rng(0)
    for _ in range(20):
        m, b = random_colour_transform(rng)
        grey = m @ np.full(3, 0.5) + b
        assert np.ptp(grey) < 1e-5


def test_audio_noise_floor_turns_digital_silence_into_room_noise(data_root):
    """``audio_noise_dbfs``: the leading digital silence of a synthetic clip gets a noise floor in
    -72..-52 dBFS, the same on every read; speech is kept; off by default."""
    from fixtalk.train.data_format import TalkingFaceDataset

    plain = TalkingFaceDataset(data_root, with_mel=False)
    noisy = TalkingFaceDataset(data_root, with_mel=False, audio_noise_dbfs=-60)
    clean = plain.noisy_audio(0)
    assert np.array_equal(clean, plain.clips[0].audio)
    lead = int(np.argmax(np.abs(clean) > 0))  # the digital silence before the speech
    assert lead > 1600 and not clean[:lead].any()
    a = noisy.noisy_audio(0)
    rms_db = 20 * np.log10(np.sqrt(np.mean(a[:lead].astype(np.float64) ** 2)))
    assert -72.5 < rms_db < -51.5, rms_db
    assert np.array_equal(a, noisy.noisy_audio(0)) and a.dtype == np.float32
    assert np.corrcoef(a[lead:], clean[lead:])[0, 1] > 0.99


def test_stickers_move_with_the_warp_and_spare_the_mouth():
    """Picture patches pasted on the source reach the driver through the pair's warp: with the
    identity warp (driver = source) both frames stay equal; the mouth box stays untouched."""
    from fixtalk.train import synthetic
    from fixtalk.train.speech import Utterance
    from fixtalk.train.stickers import add_stickers
    from fixtalk.train.warp_targets import warp_target

    utt = Utterance(np.zeros(16000, np.float32), "ah", "test", "n/a", [("AA", 0.0, 1.0)])
    frames, lms, _, _ = synthetic.make_clip(synthetic.load_portrait("astronaut"), utt, 128,
                                            np.random.default_rng(0), augment=False)
    frame = torch.from_numpy(frames[12]).permute(2, 0, 1).float() / 127.5 - 1
    flow, mouth = warp_target(lms[12], lms[12], 128)
    changed = 0
    for seed in range(4):
        src, drv = add_stickers(frame, frame.clone(), torch.from_numpy(flow), torch.from_numpy(mouth),
                                lms[12], np.random.default_rng(seed))
        diff = (src - frame).abs().amax(0)
        changed += int((diff > 0.05).sum())
        assert (src - drv).abs().max() < 0.05  # the identity warp carries the stickers unchanged
        (x0, y0), (x1, y1) = lms[12][48:68].min(0).astype(int), lms[12][48:68].max(0).astype(int)
        assert diff[y0:y1 + 1, x0:x1 + 1].max() < 1e-6  # the mouth is never covered
    assert changed > 4 * 100  # stickers were placed (at least ~10x10 px each)


def test_synthetic_set_takes_user_portraits_and_names_a_faceless_file(tmp_path):
    """``fixtalk data synthetic --portraits DIR``: each image (here a grey, off-centre crop of a
    large photograph) becomes a training identity of its own; a file without a face is refused
    with its path in the message."""
    from skimage import color, data, io

    from fixtalk.train import synthetic
    from fixtalk.train.data_format import read_clip
    from fixtalk.train.speech import Utterance

    folder = tmp_path / "portraits"
    folder.mkdir()
    grey = (color.rgb2gray(data.astronaut()) * 255).astype(np.uint8)
    big = np.full((700, 900), 90, np.uint8)
    big[150:662, 300:812] = grey  # the portrait sits off-centre in a larger grey image
    io.imsave(folder / "collins_grey.png", big, check_contrast=False)
    utt = Utterance(np.zeros(16000, np.float32), "", "test", "n/a", [("SIL", 0.0, 1.0)])
    written = synthetic.build(tmp_path / "data", clips=2, size=SIZE, eval_clips=0, seed=0,
                              log=lambda s: None, utterances={"train": [utt]}, portraits=folder)
    metas = [read_clip(p).meta for p in written]
    assert [m["identity"] for m in metas] == ["astronaut", "collins_grey"]
    assert metas[1]["licence"] == "user-supplied" and "collins_grey" in metas[1]["source"]
    assert read_clip(written[1]).frames.shape[1:] == (SIZE, SIZE, 3)

    io.imsave(folder / "coffee.png", data.coffee(), check_contrast=False)
    with pytest.raises(ValueError, match=r"coffee\.png: no face found"):
        synthetic.build(tmp_path / "data2", clips=1, size=SIZE, eval_clips=0, log=lambda s: None,
                        utterances={"train": [utt]}, portraits=folder)


@pytest.mark.parametrize("path", sorted(Path(__file__).resolve().parents[1].glob("configs/**/*.yaml")),
                         ids=lambda p: p.name)
def test_every_shipped_train_config_loads(path):
    """configs/ (the default's and the recorded experiments') parse into a TrainConfig: a renamed
    or misspelt key would be refused by name, so a recorded run stays reproducible."""
    from fixtalk.train.cli import load_train_config

    cfg = load_train_config(path)
    assert cfg.stages and all(st.steps > 0 for st in cfg.stages)


def test_reshape_gives_the_portrait_a_new_face_geometry_that_its_pixels_show():
    """``--reshape``: the reshaped portrait's own pixels carry the new geometry (dlib's landmarks on
    them follow the new points, not the old ones), and different draws are different faces."""
    import cv2

    from fixtalk.measure.faces import detect_faces
    from fixtalk.train import synthetic
    from fixtalk.train.face_shape import reshape_portrait

    portrait = synthetic.load_portrait("astronaut")
    base, lm = synthetic.aligned_portrait(portrait, 128, None, landmarks=synthetic.portrait_landmarks(portrait))
    moved_most = []
    for seed in (1, 2, 3):
        img, new = reshape_portrait(base, lm, 128, np.random.default_rng(seed))
        small = cv2.resize(img, (128, 128), interpolation=cv2.INTER_AREA)
        faces = detect_faces(small, upsample=1)
        assert len(faces) == 1
        det = np.asarray(faces[0].landmarks, np.float64)
        to_new = np.linalg.norm(det - new, axis=1)
        to_old = np.linalg.norm(det - lm, axis=1)
        shift = np.linalg.norm(new - lm, axis=1)
        big = shift > 1.5  # points the reshape moved clearly
        assert big.sum() >= 10, shift.max()
        assert to_new[big].mean() < 0.6 * to_old[big].mean(), (seed, to_new[big].mean(), to_old[big].mean())
        moved_most.append(new)
    assert np.linalg.norm(moved_most[0] - moved_most[1], axis=1).mean() > 1.0


def test_relative_flow_training_learns_motion_not_the_self_flow(data_root, tmp_path):
    """relative_flow: renders subtract the source's self-flow with gradient; base still learns
    (with the still_flow term), the self pass gets gradient (it is part of the render), and a
    flow term is refused."""
    st = StageConfig(name="base", batch_size=2, lr=2e-3, mouth=1.0, still_flow=1.0)
    trainer = _trainer(data_root, tmp_path / "rel", _config([st], relative_flow=True))
    from fixtalk.train.stage_steps import STAGE_FUNCTIONS, StepContext, set_stage_mode

    set_stage_mode(trainer.model, "base")
    batch = next(trainer._loader(st))
    grads = {}
    for rel in (False, True):
        trainer.model.zero_grad(set_to_none=True)
        ctx = StepContext(model=trainer.model, perceptual=trainer.perceptual, relative_flow=rel)
        sum(STAGE_FUNCTIONS["base"](ctx, batch, st)[0].values()).backward()
        grads[rel] = trainer.model.dec.to_flows[-1].conv.weight.grad.clone()
    assert not torch.allclose(grads[False], grads[True])  # the self pass is in the graph
    trainer.model.zero_grad(set_to_none=True)
    losses, terms, _, _ = _overfit(trainer, st, steps=8, relative_flow=True)
    assert losses[-1] < 0.9 * losses[0], losses
    assert "still_flow" in terms  # the self-flow is kept a small bias
    bad = _trainer(data_root, tmp_path / "bad", _config([StageConfig(name="fixtalk", flow=1.0)], relative_flow=True))
    with pytest.raises(ValueError, match="relative_flow"):
        bad.run_stage(bad.cfg.stages[0])

"""Portrait adaptation (fixtalk.adapt): the clips it makes from one portrait, that a few steps fit
the network to that portrait, and the checks that keep adapted weights with their base model."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fixtalk.adapt import adapt, apply_adapted, portrait_clips
from fixtalk.checkpoints import load_model
from fixtalk.config import AdaptConfig
from fixtalk.train.data_format import read_clip
from fixtalk.train.face_warp import OPEN_GAP_PX, inner_gaps
from fixtalk.train.speech import CLOSED_VISEMES
from tests.conftest import astronaut_portrait


@pytest.fixture(scope="module")
def portrait64() -> tuple[np.ndarray, np.ndarray]:
    """The astronaut aligned to a 64 px crop, as the face-crop stage gives it, and its landmarks."""
    from fixtalk.train.synthetic import aligned_portrait

    return aligned_portrait(astronaut_portrait(256), 64, None, oversample=1)


def test_adaptation_clips_move_the_head_and_open_the_mouth_exactly_on_open_visemes(tmp_path, portrait64):
    crop, lm = portrait64
    paths = portrait_clips(crop, lm, tmp_path / "clips", AdaptConfig(clips=3, clip_seconds=3.0, seed=3, partial_clips=True))
    clips = [read_clip(p) for p in paths]
    assert [c.meta["drive"] for c in clips] == ["all", "pose", "lip"]
    for clip in clips:
        assert clip.frames.shape == (75, 64, 64, 3) and clip.meta["split"] == "train"
        gaps = np.array([inner_gaps(f).max() for f in clip.landmarks])
        head = clip.landmarks[:, 30].std(axis=0).max()  # nose tip
        assert np.abs(clip.frames[1:].astype(int) - clip.frames[:-1]).mean() > 0.2
        if clip.meta["drive"] == "pose":  # the head moves, the mouth stays shut
            assert head > 0.3 and (gaps < OPEN_GAP_PX).all()
            continue
        closed = np.array([v in CLOSED_VISEMES for v in clip.meta["visemes"]])
        assert closed.any() and (~closed).sum() > 20  # random syllables: speech with pauses
        assert (gaps[closed] < OPEN_GAP_PX).all()
        opening = np.asarray(clip.meta["tracks"]["mouth_open"])
        assert np.corrcoef(gaps, opening)[0, 1] > 0.9
        assert (head > 0.3) if clip.meta["drive"] == "all" else (head < 0.05), head


def _recon_l1(model, clip) -> float:
    """Mean L1 of the clip's frames rendered from its first frame (self-reconstruction, relative
    flow as the pipeline renders)."""
    to_t = lambda f: torch.from_numpy(np.array(f, np.float32) / 127.5 - 1).permute(0, 3, 1, 2)  # noqa: E731
    frames = to_t(clip.frames[::3])
    with torch.no_grad():
        out = model(frames[:1].expand_as(frames), frames, relative_flow=True).image
    return float((out - frames).abs().mean())


def test_adaptation_fits_the_network_to_the_portrait_without_touching_the_loaded_model(
        tmp_path, portrait64, tiny_checkpoint):
    torch.set_num_threads(1)
    crop, lm = portrait64
    model = load_model(tiny_checkpoint).eval()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    held = read_clip(portrait_clips(crop, lm, tmp_path / "held", AdaptConfig(clips=1, clip_seconds=1.2, seed=99))[0])
    before = _recon_l1(model, held)

    cfg = AdaptConfig(steps=40, clips=2, clip_seconds=1.5, lr=0.001, num_threads=1)
    out = adapt(model, crop, lm, cfg, tmp_path / "work", tmp_path / "adapted.pt", base_id="test-base",
                log=lambda s: None)
    assert out.is_file() and not (tmp_path / "work").exists()  # the work folder is cleaned up
    assert all(torch.equal(base[k], v) for k, v in model.state_dict().items())

    apply_adapted(model, out, base, "test-base")
    after = _recon_l1(model, held)
    assert after < 0.8 * before, (before, after)  # unseen motion of the same portrait
    adapted = model.state_dict()
    assert all(torch.equal(adapted[k], v) for k, v in base.items() if k.startswith("audio2lip."))
    assert not all(torch.equal(adapted[k], v) for k, v in base.items() if k.startswith("dec."))

    apply_adapted(model, None, base, "test-base")  # back to the checkpoint's own weights
    assert set(model.state_dict()) == set(base)
    assert all(torch.equal(base[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="adapted from checkpoint test-base"):
        apply_adapted(model, out, base, "another-base")
    with pytest.raises(ValueError, match="not an adapted checkpoint"):
        apply_adapted(model, tiny_checkpoint, base, "test-base")


def test_a_frozen_encoder_keeps_its_weights_while_the_rest_adapts(tmp_path, portrait64, tiny_checkpoint):
    """``frozen="enc."`` (AdaptConfig.frozen): the encoder E is not trained (no backward through
    it: the cheaper step), while the motion heads and the decoder G still adapt."""
    torch.set_num_threads(1)
    crop, lm = portrait64
    model = load_model(tiny_checkpoint).eval()
    cfg = AdaptConfig(steps=3, clips=2, clip_seconds=1.0, frozen="enc.", num_threads=1)
    out = adapt(model, crop, lm, cfg, tmp_path / "work", tmp_path / "adapted.pt", base_id="test-base",
                log=lambda s: None)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    apply_adapted(model, out, base, "test-base")
    tuned = model.state_dict()
    encoder = [k for k in tuned if k.startswith("enc.")]
    assert encoder and all(torch.equal(tuned[k], base[k]) for k in encoder)
    for part in ("dec.", "lip_fc.", "pose_fc."):  # the decoder and the motion heads still adapt
        assert any(not torch.equal(v, base[k]) for k, v in tuned.items() if k.startswith(part)), part


def test_the_pipeline_adapts_once_per_portrait_and_reuses_it_on_rerun(ray_session, tmp_path, tiny_checkpoint):
    import subprocess

    import pandas as pd

    from pipeline.config import load_config
    from pipeline.run import RunRequest, run
    from stages.base import ClipError
    from stages.rendering.runtime import load_runtime
    from tests.conftest import make_speech, save_png

    if subprocess.run(["sh", "-c", "command -v ffmpeg && command -v espeak-ng"], capture_output=True).returncode:
        pytest.skip("needs ffmpeg and espeak-ng (make install)")
    save_png(tmp_path / "face.png", astronaut_portrait(192))
    make_speech(tmp_path / "hi.wav", "Hi.", speed=200)
    rows = [{"clip_id": f"c{i}", "portrait": "face.png", "audio": "hi.wav", "script": "Hi."} for i in range(3)]
    overrides = ["mux.preset=ultrafast", "qc.enabled=false", "align.enabled=false", "adapt.enabled=true",
                 "adapt.recipe.steps=3", "adapt.recipe.clips=1", "adapt.recipe.clip_seconds=0.6"]
    manifest = tmp_path / "m.csv"
    pd.DataFrame(rows[:2]).to_csv(manifest, index=False)
    out = tmp_path / "out"
    first = run(RunRequest(manifest, out, overrides=overrides, checkpoint=str(tiny_checkpoint), tty=False))
    assert first.exit_code == 0, (first.error, first.results.get("error_message"))
    files = sorted((out / "work" / "_adapted").glob("*.pt"))
    assert len(files) == 1 and not list((out / "work" / "_adapted").glob("*.work"))
    assert set(first.results["adapted_checkpoint"]) == {str(files[0])}
    mtime = files[0].stat().st_mtime_ns

    pd.DataFrame(rows).to_csv(manifest, index=False)  # one more clip of the same portrait
    again = run(RunRequest(manifest, out, overrides=overrides, checkpoint=str(tiny_checkpoint), tty=False))
    assert again.exit_code == 0 and again.info["rendered_this_run"] == 1
    assert files[0].stat().st_mtime_ns == mtime  # reused, not adapted again
    assert again.results.set_index("clip_id").loc["c2", "adapted_checkpoint"] == str(files[0])

    # the motion/render runtime swaps the adapted weights in per row and back out
    runtime = load_runtime(load_config(overrides=[f"model.checkpoint={tiny_checkpoint}", "model.device=cpu"]))
    own = {k: v.clone() for k, v in runtime.model.state_dict().items()}
    runtime.use_row_weights({"adapted_checkpoint": str(files[0])})
    assert not all(torch.equal(own[k], v) for k, v in runtime.model.state_dict().items())
    runtime.use_row_weights({})
    assert all(torch.equal(own[k], v) for k, v in runtime.model.state_dict().items())
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ClipError, match="delete the file and rerun"):
        runtime.use_row_weights({"adapted_checkpoint": str(tmp_path / "junk.pt")})


def test_partial_drive_and_invariance_hold_the_banks_a_clip_does_not_move(tiny_checkpoint):
    from fixtalk.train.stage_steps import partial_drive

    model = load_model(tiny_checkpoint).eval()
    gen = torch.Generator().manual_seed(0)
    src, drv = (torch.rand(3, 3, 64, 64, generator=gen) * 2 - 1 for _ in range(2))
    with torch.no_grad():
        enc_s, enc_d = model.encode(src), model.encode(drv)
        a_s = model.bank_weights(model.motion_code(enc_s))
        a_d = model.bank_weights(model.motion_code(enc_d))
        (lip, pose, exp), _ = partial_drive(model, enc_s, enc_d, torch.tensor([0, 1, 2]))  # all, pose, lip
    picks = {"lip": (lip, 0, "dsd"), "pose": (pose, 1, "dds"), "exp": (exp, 2, "dss")}
    for name, (got, bank, who) in picks.items():
        for i, w in enumerate(who):
            want = (a_s if w == "s" else a_d)[bank][i]
            assert torch.equal(got[i], want), (name, i)
    assert not torch.equal(a_s[1], a_d[1])  # the two frames do differ
    # invariance: only the banks a clip does not move are held to the source's weights
    from fixtalk.config import StageConfig
    from fixtalk.train.stage_steps import invariance_term

    st = StageConfig(name="base", invariance=1.0)
    term = lambda drive: float(invariance_term(a_s, a_d, torch.tensor(drive), st)["invariance"])  # noqa: E731
    assert term([0, 0, 0]) == 0.0  # whole-face clips: every bank may move
    assert term([1, 2, 1]) > 0.0
    assert float(invariance_term(a_s, a_s, torch.tensor([1, 2, 1]), st)["invariance"]) == 0.0
    assert invariance_term(a_s, a_d, torch.tensor([1, 2, 1]), StageConfig(name="base")) == {}


def test_adaptation_is_on_for_the_shipped_model_and_opt_in_for_a_users_checkpoint(tmp_path):
    """adapt.enabled=auto (default): the stage runs with the shipped default model (where it was
    evaluated), not with a checkpoint the user supplies unless asked; true/false force it."""
    from fixtalk.checkpoints import DEFAULT_CHECKPOINT
    from pipeline.config import ConfigError, load_config
    from pipeline.dag import enabled_stage_names

    def stages(checkpoint, *overrides):
        cfg = load_config(overrides=list(overrides))
        cfg.model.checkpoint = checkpoint
        return "adapt" in enabled_stage_names(cfg)

    mine = str(tmp_path / "mine.pt")
    assert stages(None) and stages(str(DEFAULT_CHECKPOINT)) and not stages(mine)
    assert stages(mine, "adapt.enabled=true") and not stages(None, "adapt.enabled=false")
    assert not stages(mine, "adapt.enabled=auto") and stages(None, "adapt.enabled=auto")
    with pytest.raises(ConfigError, match="adapt.enabled"):
        load_config(overrides=["adapt.enabled=sometimes"])

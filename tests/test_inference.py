"""Clip rendering (issue 2, deliverable 4): the fast batched path equals the per-frame
reference-style path (max abs diff <= 1e-4) for lip-only, lip+pose and lip+pose+exp driving at
batch sizes 1/3/8, uint8 mapping without min-max stretching, audio -> lip weights, bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fixtalk.inference import ClipRenderer, to_uint8
from tests.nets_common import one_torch_thread  # noqa: F401  (autouse fixture)
from tests.nets_common import image_tensor, small_model, smooth_image

T = 9  # frames: one partial batch for every batch size below
TOL = 1e-4


@pytest.fixture(scope="module")
def models():
    return {v: small_model(v, seed=i) for i, v in enumerate(("edtalk", "edtalk_lip_pose", "fixtalk"))}


def driving(model, state, seed: int = 0):
    """Per-frame lip / pose / expression weights around the source's own."""
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 3, T).unsqueeze(1)
    lip = state.alpha_lip + 0.5 * torch.sin(t + torch.rand(1, 20, generator=g) * 6)
    pose = state.alpha_pose + 0.2 * torch.sin(t + torch.rand(1, 6, generator=g) * 6)
    exp = None
    if model.has_exp:
        exp = state.alpha_exp + torch.sin(t + torch.rand(1, 10, generator=g) * 6)
    return lip, pose, exp


CASES = [  # (variant, mode)
    ("edtalk", "lip"), ("edtalk", "lip+pose"), ("edtalk", "lip+pose+exp"), ("edtalk", "lip+pose+label"),
    ("edtalk_lip_pose", "lip"), ("edtalk_lip_pose", "lip+pose"),
    ("fixtalk", "lip"), ("fixtalk", "lip+pose+exp"),
]


@pytest.mark.parametrize("variant, mode", CASES)
def test_fast_path_equals_per_frame_reference(models, variant, mode):
    model = models[variant]
    r = ClipRenderer(model, batch_size=1)
    state = r.source(smooth_image(32, seed=11))
    lip, pose, exp = driving(model, state)
    pose = pose if "pose" in mode else None
    exp = {"lip+pose+exp": exp, "lip+pose+label": None if exp is None else exp[3:4]}.get(mode)
    ref = torch.cat(list(r.render_reference_float(state, lip, pose, exp)))
    assert ref.shape == (T, 3, 32, 32)
    assert (ref[0] - ref[-1]).abs().max() > 1e-3  # the driving actually moves the frames
    for bs in (1, 3, 8):
        r.batch_size = bs
        chunks = list(r.render_float(state, lip, pose, exp))
        assert [len(c) for c in chunks] == [min(bs, T - i) for i in range(0, T, bs)]
        diff = (torch.cat(chunks) - ref).abs().max().item()
        assert diff <= TOL, (variant, mode, bs, diff)


def test_fast_path_depends_on_each_driving_component(models):
    model = models["edtalk"]
    r = ClipRenderer(model, batch_size=4)
    state = r.source(smooth_image(32, seed=11))
    lip, pose, exp = driving(model, state)
    base = torch.cat(list(r.render_float(state, lip, pose, exp)))
    for changed in ((lip * 0, pose, exp), (lip, pose * 0, exp), (lip, pose, exp * 0)):
        assert (torch.cat(list(r.render_float(state, *changed))) - base).abs().max() > 1e-3


def test_uint8_mapping_is_fixed_not_stretched(models):
    x = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0, -3.0, 3.0]).view(1, 1, 1, 7).expand(1, 3, 1, 7)
    np.testing.assert_array_equal(to_uint8(x)[0, 0, :, 0], [0, 64, 128, 191, 255, 0, 255])
    flat = to_uint8(torch.full((2, 3, 4, 4), 0.1))
    assert flat.shape == (2, 4, 4, 3) and flat.dtype == np.uint8 and np.all(flat == 140)
    r = ClipRenderer(models["edtalk"], batch_size=4)
    state = r.source(smooth_image(32, seed=11))
    lip = driving(models["edtalk"], state)[0]
    floats = torch.cat(list(r.render_float(state, lip)))
    frames = np.concatenate(list(r.render(state, lip)))
    expected = ((floats.clamp(-1, 1) + 1) / 2 * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    np.testing.assert_array_equal(frames, expected.numpy())


def test_lip_weights_from_audio_and_motion_weights_from_frames(models):
    r = ClipRenderer(models["edtalk"], batch_size=3)
    wave = (0.3 * np.sin(np.linspace(0, 400 * np.pi, 16000 + 300))).astype(np.float32)
    lip = r.lip_weights(wave)
    assert lip.shape == (25, 20) and torch.isfinite(lip).all()  # floor(16300 / 640) frames
    frames = np.stack([smooth_image(32, seed=s) for s in range(4)])
    w = r.motion_weights(frames)
    assert w["lip"].shape == (4, 20) and w["pose"].shape == (4, 6) and w["exp"].shape == (4, 10)
    one = r.motion_weights(frames[2:3])
    torch.testing.assert_close(one["pose"][0], w["pose"][2], atol=1e-5, rtol=0)


def test_silence_gate_rests_the_lips_in_pauses_only(models):
    """Speech 0-1 s, a -70 dBFS floor 1-2 s, speech again: the gated weights equal the network's
    rest output (digital silence) in the pause, and the raw output where the speech is."""
    from fixtalk.config import SilenceGate
    from fixtalk.nets.audio_features import speech_gate

    r = ClipRenderer(models["edtalk"])
    rng = np.random.default_rng(0)
    t = np.arange(48000) / 16000
    speech = 0.2 * np.sin(2 * np.pi * 180 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    wave = (speech + 3e-4 * rng.standard_normal(len(t))).astype(np.float32)
    wave[16000:32000] = 3e-4 * rng.standard_normal(16000)  # -70 dBFS room noise
    gate = SilenceGate(hold_frames=2)
    g = speech_gate(wave, r.model.cfg.audio, gate)
    assert g.shape == (75,) and (g[:25] == 1).all() and (g[50:] == 1).all() and (g[27:48] == 0).all()
    assert (g[25:27] == 1).all() and (g[48:50] == 1).all()  # held 2 frames into the pause each side
    raw = r.lip_weights(wave, smoothing_sigma=0, silence=None)
    gated = r.lip_weights(wave, smoothing_sigma=0, silence=gate)
    rest = r.lip_weights(np.zeros(1280, np.float32), smoothing_sigma=0, silence=None)[0]
    torch.testing.assert_close(gated[30:45], rest.expand(15, -1), atol=1e-6, rtol=0)
    torch.testing.assert_close(gated[:25], raw[:25], atol=1e-6, rtol=0)
    assert (raw[30:45] - rest).abs().max() > 1e-3  # the network alone does move in the pause
    off = r.lip_weights(wave, smoothing_sigma=0, silence=SilenceGate(enabled=False))
    torch.testing.assert_close(off, raw)
    smoothed = r.lip_weights(wave, smoothing_sigma=3.0, silence=None)
    assert (smoothed[5:20] - raw[5:20]).abs().max() > 1e-4  # the sigma is applied


def test_source_tensor_equals_uint8_source(models):
    r = ClipRenderer(models["fixtalk"])
    img = smooth_image(32, seed=5)
    a = r.source(img)
    b = r.source_tensor(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1)
    torch.testing.assert_close(a.code, b.code, atol=1e-5, rtol=0)
    torch.testing.assert_close(a.motion, b.motion, atol=1e-5, rtol=0)


def test_bf16_autocast_runs_close_to_float32(models):
    r32 = ClipRenderer(models["edtalk_lip_pose"], batch_size=4)
    state = r32.source(smooth_image(32, seed=1))
    lip = driving(models["edtalk_lip_pose"], state)[0][:4]
    ref = torch.cat(list(r32.render_float(state, lip)))
    r16 = ClipRenderer(models["edtalk_lip_pose"], batch_size=4, precision="bfloat16")
    out = torch.cat(list(r16.render_float(r16.source(smooth_image(32, seed=1)), lip)))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert (out - ref).abs().mean() < 0.1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(models):
    rc, rg = ClipRenderer(models["edtalk"]), ClipRenderer(small_model("edtalk"), device="cuda")
    sc, sg = rc.source(smooth_image(32)), rg.source(smooth_image(32))
    lip = driving(models["edtalk"], sc)[0]
    a = torch.cat(list(rc.render_float(sc, lip)))
    b = torch.cat(list(rg.render_float(sg, lip.cuda()))).cpu()
    assert (a - b).abs().max() < 1e-3


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("image, match", [
    (np.zeros((16, 16, 3), np.uint8), r"expected shape \(32, 32, 3\).*model size 32\), got \(16, 16, 3\)"),
    (np.zeros((32, 32, 4), np.uint8), "3 channels \\(RGB\\), got 4 channels"),
    (np.zeros((32, 32), np.uint8), "got 1 channel \\(grey\\)"),
    (np.zeros((32, 32, 3), np.float32), "expected dtype uint8"),
    ([[0, 0, 0]], "numpy uint8 array"),
])
def test_bad_source_images(models, image, match):
    r = ClipRenderer(models["edtalk"])
    with pytest.raises(ValueError, match=match) as err:
        r.source(image)
    assert err.value.args[0].startswith("source image:")


def test_bad_driving_inputs(models):
    r = ClipRenderer(models["edtalk"])
    state = r.source(smooth_image(32))
    lip, pose, exp = driving(models["edtalk"], state)
    nan_lip = lip.clone()
    nan_lip[2, 3] = float("nan")
    inf_pose = pose.clone()
    inf_pose[0, 0] = float("inf")
    bad = [((nan_lip, None, None), "alpha_lip contains NaN or Inf"),
           ((lip, inf_pose, None), "alpha_pose contains NaN or Inf"),
           ((lip[:, :19], None, None), r"alpha_lip: expected shape \(T, 20\), got \(9, 19\)"),
           ((lip, pose[:5], None), "alpha_pose: 5 rows, expected 9 .* or 1"),
           ((lip, None, exp[:, :3]), r"alpha_exp: expected shape \(T, 10\)")]
    for args, match in bad:
        with pytest.raises(ValueError, match=match):
            next(r.render_float(state, *args))
    with pytest.raises(ValueError, match="driving frames: expected shape \\(N, 32, 32, 3\\)"):
        r.motion_weights(smooth_image(32))
    with pytest.raises(ValueError, match="NaN or Inf"):
        r.lip_weights(np.full(3200, np.nan, np.float32))
    with pytest.raises(ValueError, match="NaN or Inf"):
        r.source_tensor(image_tensor(32).fill_(float("inf")))
    with pytest.raises(ValueError, match="precision float16 needs a CUDA device"):
        ClipRenderer(models["edtalk"], precision="float16")
    with pytest.raises(ValueError, match="precision must be one of float32, bfloat16, float16"):
        ClipRenderer(models["edtalk"], precision="fp16")
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        ClipRenderer(models["edtalk"], batch_size=0)


@pytest.mark.parametrize("variant", ["edtalk", "fixtalk"])
def test_relative_flow_holds_the_source_still_with_its_own_weights(models, variant):
    """render.relative_flow: the portrait driven by its own weights is the identity-warp ('still')
    pass exactly, where the plain decoder moves it by its self-flow; zero offsets are the plain
    decoder; the fast path equals the per-frame path with the correction too."""
    model = models[variant]
    plain, rel = ClipRenderer(model, batch_size=4), ClipRenderer(model, batch_size=4, relative_flow=True)
    img = smooth_image(32, seed=11)
    s_plain, s_rel = plain.source(img), rel.source(img)
    assert s_plain.flow_offsets is None and len(s_rel.flow_offsets) == len(model.dec.levels)
    assert max(float(o.abs().max()) for o in s_rel.flow_offsets) > 1e-3  # a real self-flow to remove
    with torch.no_grad():
        still = model.decode(s_rel.code, s_rel.feats, s_rel.alpha_lip, s_rel.alpha_pose, s_rel.alpha_exp,
                             source_motion=s_rel.motion, still=True)
        zero = [torch.zeros_like(o) for o in s_rel.flow_offsets]
        plain_ref = model.decode(s_rel.code, s_rel.feats, s_rel.alpha_lip, s_rel.alpha_pose, s_rel.alpha_exp,
                                 source_motion=s_rel.motion)
        zero_off = model.decode(s_rel.code, s_rel.feats, s_rel.alpha_lip, s_rel.alpha_pose, s_rel.alpha_exp,
                                source_motion=s_rel.motion, flow_offsets=zero)
    assert torch.equal(plain_ref, zero_off)
    own_rel = torch.cat(list(rel.render_float(s_rel, s_rel.alpha_lip)))
    own_plain = torch.cat(list(plain.render_float(s_plain, s_plain.alpha_lip)))
    assert (own_rel - still).abs().max().item() <= 1e-5
    assert (own_plain - still).abs().max().item() > 1e-3
    lip, pose, exp = driving(model, s_rel)
    fast = torch.cat(list(rel.render_float(s_rel, lip, pose, exp)))
    ref = torch.cat(list(rel.render_reference_float(s_rel, lip, pose, exp)))
    assert (fast - ref).abs().max().item() <= TOL
    assert (fast - torch.cat(list(plain.render_float(s_plain, lip, pose, exp)))).abs().max().item() > 1e-3


def test_pixel_warp_keeps_the_warped_source_where_the_generator_only_moves_it():
    """fixtalk.pixel_warp: where G equals the warped source W the frame is W exactly; inside a
    patch where G departs from W by far more than the gate's ``low + ramp`` it is G exactly."""
    from fixtalk.config import PixelWarp
    from fixtalk.nets.decoder import identity_grid
    from fixtalk.pixel_warp import pixel_warp

    torch.manual_seed(0)
    src = torch.rand(1, 3, 32, 32) * 2 - 1
    shift = torch.zeros(2, 32, 32, 2)
    shift[..., 0] = 2.0 / 32  # one pixel to the right
    grid = identity_grid(32, "cpu", torch.float32) + shift
    warped = torch.nn.functional.grid_sample(src.expand(2, -1, -1, -1), grid, padding_mode="border",
                                             align_corners=False)
    gen = warped.clone()
    gen[1, :, 10:22, 10:22] = -1.0  # a dark "open mouth": W there is noise about 0
    cfg = PixelWarp(low=0.1, ramp=0.15, sigma=1.0)
    out = pixel_warp(gen, src, grid, cfg)
    assert torch.allclose(out[0], warped[0], atol=1e-6)
    assert torch.allclose(out[1, :, 13:19, 13:19], gen[1, :, 13:19, 13:19], atol=1e-6)
    assert torch.allclose(out[1, :, :6], warped[1, :, :6], atol=1e-6)


def test_pixel_warp_renders_the_default_model_sharper_and_is_the_generator_when_off():
    """With the shipped default model, the portrait driven by its own weights (relative flow: the
    identity warp) comes out as the portrait's own pixels almost everywhere; disabled, the
    renderer gives the generator's frame unchanged."""
    from fixtalk.checkpoints import DEFAULT_CHECKPOINT, load_model
    from fixtalk.config import PixelWarp
    from tests.conftest import astronaut_portrait

    if not DEFAULT_CHECKPOINT.is_file():
        pytest.skip("no shipped default model")
    from fixtalk.train.synthetic import aligned_portrait

    model = load_model(DEFAULT_CHECKPOINT)
    crop = aligned_portrait(astronaut_portrait(256), model.cfg.size, None, oversample=1)[0]
    sharp = ClipRenderer(model, relative_flow=True, pixel_warp=PixelWarp())
    plain = ClipRenderer(model, relative_flow=True, pixel_warp=PixelWarp(enabled=False))
    g_only = ClipRenderer(model, relative_flow=True)
    state = sharp.source(crop)
    out = np.concatenate(list(sharp.render(state, state.alpha_lip)))[0].astype(float)
    gen = np.concatenate(list(plain.render(state, state.alpha_lip)))[0]
    assert np.array_equal(gen, np.concatenate(list(g_only.render(state, state.alpha_lip)))[0])
    face = (slice(32, 96), slice(32, 96))  # the face (the generator's crop border differs most)
    psnr = lambda a: 10 * np.log10(255.0 ** 2 / max(np.mean((a[face] - crop[face].astype(float)) ** 2), 1e-9))  # noqa: E731
    assert psnr(out) > 35 and psnr(out) > psnr(gen.astype(float)) + 5, (psnr(out), psnr(gen.astype(float)))

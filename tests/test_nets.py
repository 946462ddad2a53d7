"""Network modules (issue 2, deliverables 1 and 7): preset shapes and parameter counts, forward
shapes, the QR motion basis (orthonormality, partial sums, caching), the Wav2Lip mel windows
(count = floor(samples / 640) and their alignment) and bad-input errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fixtalk.config import AudioConfig
from fixtalk.model import FixTalk
from fixtalk.nets.audio_features import mel_windows, melspectrogram, window_starts
from fixtalk.nets.motion_bases import orthonormal_basis
from fixtalk.presets import PRESETS, get_preset
from tests.nets_common import one_torch_thread  # noqa: F401  (autouse fixture)
from tests.nets_common import image_tensor, small_config, small_model

# trainable parameter counts of EDTalk's generators (shared/research/edtalk_architecture.md)
EDTALK_GEN_PARAMS = {"edtalk-256": 64_228_397, "edtalk-lip-pose-256": 46_173_091}
AUDIO2LIP_PARAMS = 2_822_932


def meta_model(name: str) -> FixTalk:
    with torch.device("meta"):  # shapes only, no memory, no init cost
        return FixTalk(get_preset(name))


def count(params) -> int:
    return sum(p.numel() for _, p in params)


# ------------------------------------------------------------------------------ presets
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_state_dict_shapes(name):
    cfg = get_preset(name)
    m = meta_model(name)
    sd = m.state_dict()
    s, d, ch = cfg.size, cfg.style_dim, cfg.channels
    assert cfg.levels == [2 ** i for i in range(3, int(math.log2(s)) + 1)]
    assert sd["enc.net_app.convs.0.0.weight"].shape == (ch[s], 3, 1, 1)
    n_res = int(math.log2(s)) - 2
    assert sd[f"enc.net_app.convs.{n_res + 1}.weight"].shape == (d, ch[4], 4, 4)  # f_6 head
    assert sd["dec.input.input"].shape == (1, ch[4], 4, 4)
    assert len(m.dec.to_flows) == len(m.dec.to_rgbs) == len(cfg.levels)
    for k, r in enumerate(cfg.levels):
        assert sd[f"dec.convs.{2 * k + 1}.conv.weight"].shape == (1, ch[r], ch[r], 3, 3)
        assert sd[f"dec.to_flows.{k}.conv.weight"].shape == (1, 3, ch[r], 1, 1)
    n_lp = cfg.lip_dim + cfg.pose_dim
    assert sd["direction_lipnonlip.weight"].shape == (d, n_lp)
    assert sd["lip_fc.2.weight"].shape == (cfg.lip_dim, d)
    assert sd["pose_fc.2.weight"].shape == (cfg.pose_dim, d)
    assert ("direction_exp.weight" in sd) == cfg.has_exp == ("dec.fineadainresblock.0.conv2.weight" in sd)
    if cfg.has_exp:
        assert sd["direction_exp.weight"].shape == (d, cfg.exp_dim)
    fix = cfg.variant == "fixtalk"
    assert (m.emi is not None) == (m.edi is not None) == fix
    assert any(k.startswith("emi.") for k in sd) == any(k.startswith("edi.") for k in sd) == fix


@pytest.mark.parametrize("name", sorted(EDTALK_GEN_PARAMS))
def test_edtalk_parameter_counts_match_the_reference(name):
    m = meta_model(name)
    gen = [(k, p) for k, p in m.named_parameters() if not k.startswith(("audio2lip.", "emi.", "edi."))]
    assert count(gen) == EDTALK_GEN_PARAMS[name]
    assert count(m.audio2lip.named_parameters()) == AUDIO2LIP_PARAMS


def test_fixtalk_presets_add_emi_and_edi_to_the_generator():
    for name, levels in (("fixtalk-512", 7), ("tiny", 5)):
        m = meta_model(name)
        assert len(m.cfg.levels) == levels
        assert count(m.emi.named_parameters()) > 0 and count(m.edi.named_parameters()) > 0
    tiny = meta_model("tiny")
    assert count(tiny.named_parameters()) < 6_000_000  # trainable on a 2-core CPU


def test_tiny_forward_shapes():
    torch.manual_seed(0)
    m = FixTalk(get_preset("tiny")).eval()
    with torch.no_grad():
        out = m(image_tensor(128, 1, seed=1), image_tensor(128, 1, seed=2))
    assert out.image.shape == (1, 3, 128, 128) and torch.isfinite(out.image).all()
    assert out.z_d.shape == out.z_s.shape == out.motion.shape == (1, 128)


@pytest.mark.parametrize("variant", ["edtalk", "edtalk_lip_pose", "fixtalk"])
def test_small_forward_shapes(variant):
    m = small_model(variant)
    cfg = m.cfg
    src, drv = image_tensor(32, 2, seed=1), image_tensor(32, 2, seed=5)
    with torch.no_grad():
        code, feats = m.encode(src)
        out = m(src, drv)
    assert code.shape == (2, cfg.style_dim)
    assert [tuple(f.shape) for f in feats] == [(2, cfg.channels[r], r, r) for r in cfg.levels]
    assert out.image.shape == (2, 3, 32, 32) and torch.isfinite(out.image).all()
    assert out.alpha_lip.shape == (2, 20) and out.alpha_pose.shape == (2, 6)
    assert (out.alpha_exp is None) == (variant == "edtalk_lip_pose")
    assert (out.edi is None) == (variant != "fixtalk")
    # the two sources give different images: the output depends on the input
    assert (out.image[0] - out.image[1]).abs().max() > 1e-3


# ------------------------------------------------------------------------------ motion bases
def test_basis_orthonormal_and_lip_pose_columns_independent_of_exp_bank():
    m = small_model("edtalk")
    q = m.basis()
    assert q.shape == (40, 36)
    torch.testing.assert_close(q.t() @ q, torch.eye(36), atol=1e-5, rtol=0)
    q_lp = orthonormal_basis(m.direction_lipnonlip.weight)
    torch.testing.assert_close(q[:, :26], q_lp, atol=1e-5, rtol=0)
    assert (q - torch.linalg.qr(torch.cat([m.direction_lipnonlip.weight,
                                           m.direction_exp.weight], 1) + 1e-8)[0]).abs().max() < 1e-6


@pytest.mark.parametrize("variant", ["edtalk", "edtalk_lip_pose"])
def test_partial_latents_sum_to_the_motion(variant):
    m = small_model(variant)
    g = torch.Generator().manual_seed(3)
    a_lip, a_pose = torch.randn(4, 20, generator=g), torch.randn(4, 6, generator=g)
    a_exp = torch.randn(4, 10, generator=g) if m.has_exp else None
    with torch.no_grad():
        motion, e = m.motion_latents(a_lip, a_pose, a_exp)
        parts = m.partial_latents(a_lip, a_pose, a_exp)
    assert sorted(parts) == (["exp", "lip", "pose"] if m.has_exp else ["lip", "pose"])
    torch.testing.assert_close(sum(parts.values()), motion, atol=1e-5, rtol=0)
    if m.has_exp:
        torch.testing.assert_close(parts["exp"], e, atol=1e-6, rtol=0)
        # lip / pose / exp latents are mutually orthogonal (orthonormal columns)
        for a, b in (("lip", "pose"), ("lip", "exp"), ("pose", "exp")):
            assert (parts[a] * parts[b]).sum(-1).abs().max() < 1e-4
        # ||Q alpha|| = ||alpha||
        alpha = torch.cat([a_lip, a_pose, a_exp], -1)
        torch.testing.assert_close(motion.norm(dim=-1), alpha.norm(dim=-1), atol=1e-4, rtol=0)
    else:
        assert e is None


def test_basis_cache_follows_weight_updates_and_training_sees_gradients():
    m = small_model("edtalk")
    with torch.no_grad():
        q1 = m.basis()
        assert m.basis() is q1  # cached in eval mode without autograd
        m.direction_exp.weight.mul_(2.0).add_(0.5)
        q2 = m.basis()
    assert q2 is not q1 and (q2[:, 26:] - q1[:, 26:]).abs().max() > 1e-3
    m.train()
    motion, _ = m.motion_latents(torch.ones(1, 20), torch.ones(1, 6), torch.ones(1, 10))
    motion.sum().backward()
    assert m.direction_lipnonlip.weight.grad.abs().sum() > 0
    assert m.direction_exp.weight.grad.abs().sum() > 0


# ------------------------------------------------------------------------------ audio features
@pytest.mark.parametrize("samples", [640, 641, 1279, 1280, 16000, 36_800, 40_639])
def test_mel_window_count_is_floor_samples_over_640(samples):
    wave = np.random.default_rng(samples).uniform(-0.5, 0.5, samples)
    win = mel_windows(wave, AudioConfig())
    assert win.shape == (samples // 640, 1, 80, 16) and win.dtype == np.float32


def test_mel_windows_are_centred_on_their_video_frame():
    cfg = AudioConfig()
    t, j = 20, 10  # 20 frames of silence with a 1 kHz burst during video frame 10
    wave = np.zeros(t * 640)
    n = np.arange(640)
    wave[j * 640:(j + 1) * 640] = 0.5 * np.sin(2 * np.pi * 1000 * n / 16000)
    win = mel_windows(wave, cfg)[:, 0]  # (T, 80, 16)
    spec = melspectrogram(wave, cfg)  # (frames, 80)
    starts = window_starts(t, cfg)
    assert list(starts[:4]) == [-6, -3, 0, 3]  # int(80 (i - 2) / 25), truncated toward zero
    np.testing.assert_array_equal(win[4], spec[starts[4]:starts[4] + 16].T)
    np.testing.assert_array_equal(win[0][:, 0], spec[0])  # negative starts clamp to frame 0
    loud = win[j].max(axis=0)  # per column of frame j's window
    assert 6 <= int(np.argmax(loud)) <= 9  # the burst sits in the middle of its own window
    for i in (0, 1, 2, 3, 4, 16, 17, 18, 19):  # far windows see only silence (floor -4)
        assert np.all(win[i] == -4.0), i
    for i in range(8, 13):  # the 5 windows around j hear it
        assert win[i].max() > 0.0, i


@pytest.mark.parametrize("wave, match", [
    (np.zeros((2, 16000)), "mono"),
    (np.zeros(16000, dtype=np.int16), "float"),
    (np.full(16000, np.nan), "NaN or Inf"),
    (np.zeros(100), "too short"),
])
def test_bad_waveforms_are_rejected(wave, match):
    with pytest.raises(ValueError, match=match):
        mel_windows(wave, AudioConfig())


# ------------------------------------------------------------------------------ bad images
@pytest.mark.parametrize("make, match", [
    (lambda: torch.zeros(1, 3, 16, 16), r"\(16, 16\) pixels.*model size 32"),
    (lambda: torch.zeros(1, 4, 32, 32), "4 channels"),
    (lambda: torch.zeros(1, 1, 32, 32), "1 channels"),
    (lambda: torch.zeros(3, 32, 32), "shape"),
    (lambda: torch.zeros(1, 3, 32, 32, dtype=torch.uint8), "dtype"),
    (lambda: torch.full((1, 3, 32, 32), float("nan")), "NaN or Inf"),
    (lambda: torch.zeros(1, 3, 32, 32).index_fill_(2, torch.tensor([5]), float("inf")), "NaN or Inf"),
    (lambda: np.zeros((1, 3, 32, 32), np.float32), "ndarray"),
])
def test_bad_images_raise_value_error_saying_what_is_expected(make, match):
    m = small_model("edtalk")
    with pytest.raises(ValueError, match=match) as err:
        m.encode(make())
    assert "expected images (B, 3, 32, 32)" in str(err.value)


def test_invalid_configs_are_rejected():
    with pytest.raises(ValueError, match="power of two"):
        FixTalk(small_config(size=48))
    with pytest.raises(ValueError, match="lacks resolutions"):
        FixTalk(small_config(channels={4: 8, 8: 8, 16: 8}))
    with pytest.raises(ValueError, match="not a decoder level"):
        FixTalk(small_config("fixtalk", level=64))
    with pytest.raises(ValueError, match="style_dim 32 must be >= .* 36"):
        FixTalk(small_config(style_dim=32))

"""render.precision and the device defaults (issue 21, deliverables 6-7): the fast path at the
CPU's default batch equals the per-frame path; bfloat16 autocast on CPU renders within a stated
tolerance of float32; a wrong precision, or float16 on CPU, is refused naming the setting."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fixtalk.inference import ClipRenderer, default_batch_size, to_uint8
from tests.nets_common import one_torch_thread  # noqa: F401  (autouse fixture)
from tests.nets_common import small_model, smooth_image

T = 5


@pytest.fixture(scope="module")
def model():
    return small_model("edtalk", seed=3)


def clip(r: ClipRenderer, seed: int = 0):
    state = r.source(smooth_image(32, seed=7))
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 3, T).unsqueeze(1)
    lip = state.alpha_lip + 0.5 * torch.sin(t + torch.rand(1, 20, generator=g) * 6)
    pose = state.alpha_pose + 0.2 * torch.sin(t + torch.rand(1, 6, generator=g) * 6)
    return state, lip, pose


def test_default_batch_is_explicit_per_device(model):
    assert default_batch_size("cpu") == 1 and default_batch_size("cuda") == 8
    r = ClipRenderer(model)
    assert r.batch_size == 1
    state, lip, pose = clip(r)
    fast = list(r.render_float(state, lip, pose))
    assert [len(x) for x in fast] == [1] * T
    ref = torch.cat(list(r.render_reference_float(state, lip, pose)))
    assert (ref[0] - ref[-1]).abs().max() > 1e-3  # the clip moves
    assert (torch.cat(fast) - ref).abs().max() <= 1e-4


def test_bfloat16_on_cpu_stays_close_to_float32(model):
    """Tolerance (small random model, 32 px, raw frames up to |5.8|): mean abs diff of the raw
    frames <= 0.02, max <= 0.5, PSNR of the uint8 frames >= 38 dB (measured: 0.0072, 0.25,
    46.5 dB); the figures for tiny and edtalk-256 are in docs/performance.md."""
    r32, r16 = ClipRenderer(model), ClipRenderer(model, precision="bfloat16")
    state, lip, pose = clip(r32)
    ref = torch.cat(list(r32.render_float(state, lip, pose)))
    out = torch.cat(list(r16.render_float(r16.source(smooth_image(32, seed=7)), lip, pose)))
    assert out.dtype == torch.float32 and out.shape == ref.shape
    diff = (out - ref).abs()
    assert 1e-3 < diff.mean() <= 0.02, float(diff.mean())  # > 0: bfloat16 arithmetic did run
    assert diff.max() <= 0.5, float(diff.max())
    mse = np.mean((to_uint8(out).astype(np.float64) - to_uint8(ref)) ** 2)
    assert 10 * np.log10(255 ** 2 / max(mse, 1e-12)) >= 38


def test_precision_is_validated_with_the_config():
    from pipeline.config import ConfigError, load_config

    assert load_config().render.precision == "float32"
    assert load_config(overrides=["render.precision=bfloat16"]).render.precision == "bfloat16"
    with pytest.raises(ConfigError, match=r"render.precision='fp16': expected one of float32, bfloat16, float16"):
        load_config(overrides=["render.precision=fp16"])
    with pytest.raises(ConfigError, match="render.batch_size=0: expected >= 1"):
        load_config(overrides=["render.batch_size=0"])
    with pytest.raises(ConfigError, match="render.output='both'"):
        load_config(overrides=["render.output=both"])


def test_float16_on_cpu_is_refused_naming_the_setting():
    from pipeline.config import load_config
    from stages.base import SystemicError
    from stages.rendering.runtime import load_runtime

    cfg = load_config(overrides=["render.precision=float16", "model.device=cpu"])
    with pytest.raises(SystemicError, match="render.precision=float16 needs a CUDA device.*"
                                            "set render.precision=bfloat16 .* or float32"):
        load_runtime(cfg)


@pytest.mark.parametrize("variant", ["edtalk", "fixtalk"])
def test_render_paths_set_device_and_dtype_explicitly(variant):
    """Every tensor the render paths create names its device and dtype: with the default device
    set to ``meta`` (no data) and the default dtype to float64, any tensor made without them
    would fail or change dtype. Audio -> lips, motion from frames, source, fast and per-frame
    frames with relative flow and the pixel warp, and the dub path."""
    from fixtalk.config import PixelWarp

    model = small_model(variant, seed=3)
    r = ClipRenderer(model, relative_flow=True, pixel_warp=PixelWarp())
    img = smooth_image(32, seed=7)
    wave = (0.3 * np.sin(np.linspace(0, 400 * np.pi, 16000))).astype(np.float32)
    torch.set_default_device("meta")
    torch.set_default_dtype(torch.float64)
    try:
        state = r.source(img)
        lip = r.lip_weights(wave)[:3]
        weights = r.motion_weights(np.stack([img, img]))
        fast = torch.cat(list(r.render_float(state, lip)))
        ref = torch.cat(list(r.render_reference_float(state, lip)))
        driven, rest = r.dub(np.stack([img, img]), np.zeros((2, 20), np.float32))
    finally:
        torch.set_default_device(None)
        torch.set_default_dtype(torch.float32)
    assert fast.device.type == "cpu" and fast.dtype == torch.float32 and weights["pose"].dtype == torch.float32
    assert (fast - ref).abs().max() <= 1e-4 and driven.shape == rest.shape == (2, 32, 32, 3)

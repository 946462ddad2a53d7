"""Parity with EDTalk (issue 2, deliverable 3): ``--keys`` equals edtalk_state_dict.txt, the
shared parity fixture passes (and a perturbed weight fails it), the fast clip API reproduces the
fixture's reference images, and for random sizes / channel tables / seeds the batched network and
the fast path agree with per-sample / per-frame evaluation (parity.py only reads fixture files, so
random configurations are checked against our own per-frame reference path)."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from fixtalk.inference import ClipRenderer
from fixtalk.model import FixTalk, plausible_random_init_
from fixtalk.parity import build_models, main, preset_keys, run_case, run_fixture
from tests.nets_common import one_torch_thread  # noqa: F401  (autouse fixture)
from tests.nets_common import FIXTURE, STATE_DICT_TXT, image_tensor, reference_sections, small_config

needs_txt = pytest.mark.skipif(not STATE_DICT_TXT.is_file(), reason="../shared/research absent")
needs_fixture = pytest.mark.skipif(not FIXTURE.is_file(), reason="../shared/fixtures absent")


@pytest.fixture(scope="module")
def fixture():
    return torch.load(FIXTURE, map_location="cpu", weights_only=True)


@needs_txt
@pytest.mark.parametrize("name", ["edtalk-256", "edtalk-lip-pose-256", "audio2lip"])
def test_keys_equal_the_reference_listing(name):
    ref = [(k, shape) for k, shape, _ in reference_sections()[name]]
    assert preset_keys(name) == ref


def test_keys_cli(capsys):
    assert main(["--keys", "tiny"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "enc.net_app.convs.0.0.weight\t(16, 3, 1, 1)"
    assert any(ln.startswith("emi.") for ln in lines) and any(ln.startswith("edi.") for ln in lines)
    assert main(["--keys", "no-such-preset"]) == 2
    assert "unknown preset" in capsys.readouterr().err


@needs_fixture
def test_fixture_passes_every_case(fixture):
    buf = io.StringIO()
    assert run_fixture(FIXTURE, out=buf) is True  # `python -m fixtalk.parity` exits 0 on True
    out = buf.getvalue().splitlines()
    assert out[-1] == "ALL PASS"
    names = [c["name"] for c in fixture["cases"]]
    assert [ln.split()[0] for ln in out[:-1]] == names
    assert all(ln.rstrip().endswith("PASS") for ln in out[:-1])


@needs_fixture
def test_fixture_detects_a_wrong_weight(fixture):
    fx = dict(fixture)
    sds = {k: dict(v) for k, v in fixture["state_dicts"].items()}
    sds["edtalk"]["dec.to_rgbs.2.bias"] = sds["edtalk"]["dec.to_rgbs.2.bias"] + 0.01
    fx["state_dicts"] = sds
    case = next(c for c in fixture["cases"] if c["name"] == "edtalk_decoder_levels")
    rows = {n: (err, tol) for n, err, tol in run_case(build_models(fx), case)}
    assert rows["rgb[2]"][0] > rows["rgb[2]"][1] and rows["image"][0] > 1e-3
    assert rows["rgb[1]"][0] <= rows["rgb[1]"][1]  # levels before the change still match


@needs_fixture
def test_fast_clip_api_reproduces_the_reference_images(fixture):
    """ClipRenderer's fast path (source once, cached Q, EEM run once for the constant expression,
    dead branch skipped) on the fixture's EDTalk weights gives EDTalk's own images."""
    model = build_models(fixture).edtalk
    case = next(c for c in fixture["cases"] if c["name"] == "edtalk_A_use_exp_weight")
    inp, want = case["inputs"], case["outputs"]["image"]
    r = ClipRenderer(model, batch_size=2)
    for b in range(want.shape[0]):
        state = r.source_tensor(inp["source"][b:b + 1])
        with torch.no_grad():
            pose = model.bank_weights(model.motion_code(inp["pose"][b:b + 1]))[1]
        lip = inp["alpha_lip"][b:b + 1].expand(3, -1)  # 3 frames, 2 batches
        out = torch.cat(list(r.render_float(state, lip, pose, inp["alpha_exp"][b:b + 1])))
        assert (out - want[b:b + 1]).abs().max() <= 1e-4


def random_config(seed: int):
    rng = np.random.default_rng(seed)
    size = int(rng.choice([16, 32]))
    channels = {r: 2 * int(rng.integers(2, 13)) for r in (4, 8, 16, 32) if r <= size}  # 2 heads
    variant = str(rng.choice(["edtalk", "edtalk_lip_pose", "fixtalk"]))
    cfg = small_config(variant, size=size, style_dim=2 * int(rng.integers(18, 25)), channels=channels,
                       level=8)
    return cfg, int(rng.integers(2, 5))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_configs_batched_equals_per_sample_and_fast_equals_reference(seed):
    cfg, batch = random_config(seed)
    torch.manual_seed(seed)
    model = plausible_random_init_(FixTalk(cfg), seed=seed).eval()
    s = cfg.size
    src, drv = image_tensor(s, batch, seed=seed), image_tensor(s, batch, seed=seed + 10)
    with torch.no_grad():
        full = model(src, drv).image
        single = torch.cat([model(src[i:i + 1], drv[i:i + 1]).image for i in range(batch)])
    assert (full - single).abs().max() <= 1e-4, cfg
    r = ClipRenderer(model, batch_size=batch)
    state = r.source_tensor(src[:1])
    with torch.no_grad():
        lip, pose, exp = model.bank_weights(model.motion_code(drv))
    ref = torch.cat(list(r.render_reference_float(state, lip, pose, exp)))
    fast = torch.cat(list(r.render_float(state, lip, pose, exp)))
    assert (fast - ref).abs().max() <= 1e-4, cfg

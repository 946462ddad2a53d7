"""EMI / EDI modules and their losses (issue 2, deliverable 5): shapes, train vs eval behaviour,
initialisation at the baseline, gradient flow of L_dis / L_d-mem / L_align, optimisation, determinism."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
import torch.nn.functional as F

from fixtalk.config import EDIConfig, EMIConfig
from fixtalk.losses import align_loss, d_mem_loss, dis_loss
from fixtalk.nets.edi import EDI, EDIOutput
from fixtalk.nets.emi import EMI, sine_position_encoding_2d

LEVELS = [4, 8, 16, 32]
CHANNELS = {4: 32, 8: 32, 16: 16, 32: 8}
STYLE = 24


def make_emi(seed: int = 0, **kw) -> EMI:
    torch.manual_seed(seed)
    cfg = EMIConfig(enabled=True, level=16, depth=2, heads=4, **kw)
    return EMI(cfg, CHANNELS, LEVELS, STYLE)


def make_edi(seed: int = 0, channels: int = 16, level: int = 16, **kw) -> EDI:
    torch.manual_seed(seed)
    kw.setdefault("heads", 4)
    cfg = EDIConfig(enabled=True, level=level, slots=16, **kw)
    return EDI(cfg, channels, STYLE)


def pyramid(batch: int, seed: int, levels=LEVELS, channels=CHANNELS) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, channels[r], r, r, generator=g) for r in levels]


def perturb_fusion(edi: EDI) -> None:
    """Give the zero-initialised fusion output projection non-zero weights (as after training)."""
    with torch.no_grad():
        edi.fuse.out.weight.normal_(0.0, 0.5)


# ---------------------------------------------------------------------------------------- shapes

def test_emi_shape_and_starts_near_code():
    emi = make_emi()
    feats, code = pyramid(3, 1), torch.randn(3, STYLE)
    z = emi(feats, code)
    assert z.shape == (3, STYLE)
    w = emi.fusion_weights()
    assert w.shape == (len(LEVELS) + 1,)  # P output + 3 pooled levels + code
    assert w[-1] > 0.98
    rel = (z - code).norm() / code.norm()
    assert rel < 0.05, f"z should start close to the code f_6, relative diff {rel:.3f}"


def test_emi_non_paper_sizes_and_literal_fusion():
    levels, channels = [4, 8, 16], {4: 12, 8: 20, 16: 6}
    torch.manual_seed(0)
    cfg = EMIConfig(level=8, depth=1, heads=2, attn_dim=10, num_queries=3, fuse_code=False,
                    pool_levels=(16,))
    emi = EMI(cfg, channels, levels, 7)
    z = emi(pyramid(2, 3, levels, channels), torch.randn(2, 7))
    assert z.shape == (2, 7)
    assert torch.allclose(emi.fusion_weights(), torch.full((2,), 0.5))
    # without the code term, z does not depend on the code
    feats = pyramid(2, 3, levels, channels)
    assert torch.equal(emi(feats, torch.randn(2, 7)), emi(feats, torch.randn(2, 7)))


def test_emi_bad_input_messages():
    emi = make_emi()
    feats, code = pyramid(2, 1), torch.randn(2, STYLE)
    with pytest.raises(ValueError, match="expects 4 feature maps"):
        emi(feats[:3], code)
    bad = list(feats)
    bad[2] = torch.randn(2, 16, 8, 8)
    with pytest.raises(ValueError, match="level 16 must be"):
        emi(bad, code)
    with pytest.raises(ValueError, match=r"code must be \(B, 24\)"):
        emi(feats, torch.randn(2, 5))
    with pytest.raises(ValueError, match="not among the pyramid levels"):
        EMI(EMIConfig(level=128), CHANNELS, LEVELS, STYLE)
    with pytest.raises(ValueError, match="divisible by heads"):
        EMI(EMIConfig(level=16, heads=3), CHANNELS, LEVELS, STYLE)


@pytest.mark.parametrize("channels,level,heads", [(16, 32, 4), (6, 12, 3), (8, 4, 1)])
def test_edi_shapes_any_r_c_and_identity_at_init(channels, level, heads):
    edi = make_edi(channels=channels, level=level, heads=heads).train()
    f_s, f_d = torch.randn(2, channels, level, level), torch.randn(2, channels, level, level)
    out = edi(f_s, torch.randn(2, STYLE), torch.randn(2, STYLE), f_d)
    assert isinstance(out, EDIOutput)
    assert out.feature.shape == f_s.shape
    assert torch.equal(out.feature, f_s)  # zero-initialised output projection
    assert out.addr_ms.shape == out.addr_d.shape == (2, 16)
    assert torch.allclose(out.addr_ms.sum(1), torch.ones(2))
    assert out.token_s.shape == out.token_d.shape == out.token_d_read.shape == (2, STYLE)
    assert edi.decompressor(out.token_s).shape == f_s.shape


def test_edi_token_width_and_bad_input():
    edi = make_edi(token_dim=10)
    out = edi(torch.randn(1, 16, 16, 16), torch.randn(1, STYLE), torch.randn(1, STYLE))
    assert out.token_s.shape == (1, 10) and edi.mem_ms.shape == (16, STYLE + 10)
    with pytest.raises(ValueError, match=r"f_s must have shape \(1, 16, 16, 16\)"):
        edi(torch.randn(1, 16, 8, 8), torch.randn(1, STYLE), torch.randn(1, STYLE))
    with pytest.raises(ValueError, match="f_d must have shape"):
        edi(torch.randn(1, 16, 16, 16), torch.randn(1, STYLE), torch.randn(1, STYLE),
            torch.randn(1, 8, 16, 16))
    with pytest.raises(ValueError, match="kv_mode"):
        EDI(EDIConfig(kv_mode="nope", heads=4), 16, STYLE)


# --------------------------------------------------------------------------- train vs inference

def test_edi_eval_needs_no_driver_and_ignores_it():
    edi = make_edi()
    perturb_fusion(edi)
    edi.eval()
    f_s, z_d, z_s = torch.randn(2, 16, 16, 16), torch.randn(2, STYLE), torch.randn(2, STYLE)
    with torch.no_grad():
        alone = edi(f_s, z_d, z_s)
        with_driver = edi(f_s, z_d, z_s, torch.randn(2, 16, 16, 16))
        other_motion = edi(f_s, torch.randn(2, STYLE), z_s)
    assert alone.addr_d is None and alone.token_d is None and alone.token_d_read is None
    assert not torch.equal(alone.feature, f_s)
    assert torch.equal(alone.feature, with_driver.feature)  # driver never reaches the output
    assert with_driver.addr_d is not None  # but its address is available for validation losses
    assert not torch.allclose(alone.feature, other_motion.feature)  # the motion does


def test_edi_training_reads_memory_through_driver():
    edi = make_edi()
    perturb_fusion(edi)
    f_s, z_d, z_s = torch.randn(2, 16, 16, 16), torch.randn(2, STYLE), torch.randn(2, STYLE)
    f_d1, f_d2 = torch.randn(2, 16, 16, 16), torch.randn(2, 16, 16, 16)
    with torch.no_grad():
        edi.train()
        t1, t2, t_none = edi(f_s, z_d, z_s, f_d1), edi(f_s, z_d, z_s, f_d2), edi(f_s, z_d, z_s)
        edi.eval()
        e1 = edi(f_s, z_d, z_s, f_d1)
    assert torch.allclose(t1.token_d_read, t1.addr_d @ edi.mem_d)
    assert torch.allclose(t1.token_ms_read, t1.addr_ms @ edi.mem_d)  # M_{m-s} reads from M_d
    assert not torch.allclose(t1.feature, t2.feature)  # training output follows the driver read
    assert not torch.allclose(t1.feature, e1.feature)
    assert torch.equal(t_none.feature, e1.feature)  # no driver in training -> the m-s read
    # train_read="ms" fuses the m-s read in training too
    edi_ms = make_edi(train_read="ms")
    perturb_fusion(edi_ms)
    with torch.no_grad():
        a = edi_ms.train()(f_s, z_d, z_s, f_d1).feature
        b = edi_ms.eval()(f_s, z_d, z_s).feature
    assert torch.equal(a, b)


def test_edi_figure_kv_mode_runs_and_differs():
    f_s, z_d, z_s = torch.randn(1, 16, 16, 16), torch.randn(1, STYLE), torch.randn(1, STYLE)
    outs = []
    for mode in ("recalled", "figure"):
        edi = make_edi(kv_mode=mode).eval()
        perturb_fusion(edi)
        with torch.no_grad():
            outs.append(edi(f_s, z_d, z_s).feature)
    assert outs[1].shape == f_s.shape and not torch.allclose(outs[0], outs[1])


# --------------------------------------------------------------------------------- gradient flow

def grads(module: torch.nn.Module) -> dict[str, torch.Tensor | None]:
    return {n: p.grad for n, p in module.named_parameters()}


def nonzero(g: torch.Tensor | None) -> bool:
    return g is not None and bool(g.abs().sum() > 0)


def self_driven_emi_pair(emi: EMI):
    """Two frames of one 'video': shared identity (code, coarse maps), different motion."""
    g = torch.Generator().manual_seed(5)
    src = pyramid(2, 5)
    drv = [f + 0.3 * torch.randn(f.shape, generator=g) for f in src]
    code = torch.randn(2, STYLE, generator=g)
    return emi(src, code), emi(drv, code + 0.1 * torch.randn(code.shape, generator=g))


def test_dis_loss_reaches_every_emi_parameter():
    emi = make_emi()
    z_s, z_d = self_driven_emi_pair(emi)
    loss = dis_loss(z_s, z_d, margin=0.4)
    assert loss > 0
    loss.backward()
    missing = [n for n, g in grads(emi).items() if not nonzero(g)]
    assert not missing, f"L_dis gives no gradient to {missing}"


def edi_driver_pass(edi: EDI):
    g = torch.Generator().manual_seed(7)
    f_s = torch.randn(4, 16, 16, 16, generator=g)
    f_d = f_s + 0.5 * torch.randn(4, 16, 16, 16, generator=g)
    z_s, z_d = torch.randn(4, STYLE, generator=g), torch.randn(4, STYLE, generator=g)
    return edi.train()(f_s, z_d, z_s, f_d)


def test_d_mem_loss_trains_compressor_and_driver_memory_only():
    edi = make_edi()
    out = edi_driver_pass(edi)
    d_mem_loss(out.token_d, out.token_d_read).backward()
    g = grads(edi)
    assert nonzero(g["mem_d"])
    assert nonzero(g["compressor.proj.weight"]) and nonzero(g["compressor.position_logits"])
    assert not nonzero(g["mem_ms"]) and not nonzero(g["decompressor.fc.weight"])


def test_align_loss_trains_motion_source_memory():
    edi = make_edi()
    out = edi_driver_pass(edi)
    loss = align_loss(out.addr_ms, out.addr_d)
    assert loss > 0
    loss.backward()
    g = grads(edi)
    assert nonzero(g["mem_ms"])
    assert not nonzero(g["mem_d"])  # driver address is a stop-gradient target by default
    edi.zero_grad()
    out = edi_driver_pass(edi)
    align_loss(out.addr_ms, out.addr_d, detach_target=False).backward()
    assert nonzero(edi.mem_d.grad) and nonzero(edi.mem_ms.grad)


def test_image_loss_on_feature_opens_the_zero_init_fusion():
    edi = make_edi()
    out = edi_driver_pass(edi)
    out.feature.square().mean().backward()
    assert nonzero(edi.fuse.out.weight.grad)
    assert not nonzero(edi.decompressor.fc.weight.grad)  # blocked by the zero projection at init
    torch.optim.SGD(edi.parameters(), lr=0.1).step()
    edi.zero_grad()
    edi_driver_pass(edi).feature.square().mean().backward()
    assert nonzero(edi.decompressor.fc.weight.grad) and nonzero(edi.mem_d.grad)


def optimise(params, loss_fn, steps: int = 25, lr: float = 1e-2) -> tuple[float, float]:
    """Adam steps on ``loss_fn``; returns (initial loss, loss after the steps)."""
    opt = torch.optim.Adam(params, lr=lr)
    first = loss_fn().item()
    for _ in range(steps):
        opt.zero_grad()
        loss_fn().backward()
        opt.step()
    return first, loss_fn().item()


def test_dis_loss_decreases_under_optimisation():
    # default init: the code f_6 weighs ~0.99, so the fusion logits need a large step to move
    emi = make_emi()
    first, last = optimise(emi.parameters(), lambda: dis_loss(*self_driven_emi_pair(emi), 0.4),
                           steps=50, lr=0.1)
    assert last < 0.75 * first, (first, last)
    assert emi.fusion_weights()[-1] < 0.95  # L_dis moves z away from the identity-laden code
    emi = make_emi(fuse_code=False)
    first, last = optimise(emi.parameters(), lambda: dis_loss(*self_driven_emi_pair(emi), 0.4),
                           steps=50)
    assert last < 0.5 * first, (first, last)


def test_d_mem_loss_decreases_under_optimisation():
    edi = make_edi()

    def loss() -> torch.Tensor:
        out = edi_driver_pass(edi)
        return d_mem_loss(out.token_d, out.token_d_read)

    first, last = optimise(edi.parameters(), loss)
    assert last < 0.5 * first, (first, last)


def test_align_loss_decreases_under_optimisation():
    edi = make_edi()

    def loss() -> torch.Tensor:
        out = edi_driver_pass(edi)
        return align_loss(out.addr_ms, out.addr_d)

    first, last = optimise(edi.parameters(), loss, lr=3e-2)
    assert last < 0.5 * first, (first, last)


# ------------------------------------------------------------------------ losses, determinism

def test_loss_values():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    assert torch.isclose(dis_loss(a, b, 0.25), torch.tensor(0.75 / 2))  # cos 1 and 0
    assert d_mem_loss(a, a).item() == 0.0
    assert torch.isclose(d_mem_loss(a, b), torch.tensor((1 + 0 + 1 + 3) / 4))
    assert torch.isclose(d_mem_loss(a, b, kind="cos"), torch.tensor(0.5))
    p = torch.softmax(torch.randn(3, 5), 1)
    q = torch.softmax(torch.randn(3, 5), 1)
    ref = F.kl_div(q.log(), p, reduction="batchmean")  # = KL(p || q)
    assert torch.isclose(align_loss(p, q), ref, atol=1e-6)
    assert align_loss(p, p).abs() < 1e-6
    hard = torch.tensor([[1.0, 0.0, 0.0]])
    assert torch.isfinite(align_loss(hard, torch.tensor([[0.0, 1.0, 0.0]])))
    with pytest.raises(ValueError, match="same 2-D shape"):
        dis_loss(a, b[:1], 0.1)
    with pytest.raises(ValueError, match="kind must be"):
        d_mem_loss(a, b, kind="l2")


def test_determinism_with_seed():
    feats, code = pyramid(2, 1), torch.randn(2, STYLE)
    z1, z2, z3 = make_emi(3)(feats, code), make_emi(3)(feats, code), make_emi(4)(feats, code)
    assert torch.equal(z1, z2) and not torch.equal(z1, z3)
    f_s, f_d = pyramid(2, 2)[2], pyramid(2, 3)[2]
    outs = []
    for seed in (3, 3):
        edi = make_edi(seed)
        torch.manual_seed(11)
        perturb_fusion(edi)
        outs.append(edi.train()(f_s, z1.detach(), code, f_d))
    assert torch.equal(outs[0].addr_ms, outs[1].addr_ms)
    assert torch.equal(outs[0].feature, outs[1].feature)


def test_dtype_and_buffers():
    emi, edi = make_emi().double(), make_edi().double()
    assert emi.extractor.pos.dtype == torch.float64 and edi.pos.dtype == torch.float64
    assert not any("pos" == k.split(".")[-1] for k in edi.state_dict())
    assert not any("pos" == k.split(".")[-1] for k in emi.state_dict())
    feats = [f.double() for f in pyramid(1, 1)]
    z = emi(feats, torch.randn(1, STYLE, dtype=torch.float64))
    out = edi(feats[2], z, z * 0.5)
    assert z.dtype == out.feature.dtype == out.addr_ms.dtype == torch.float64


def test_sine_position_encoding():
    pe = sine_position_encoding_2d(4, 8)
    assert pe.shape == (16, 8)
    assert len({tuple(row.tolist()) for row in pe}) == 16  # every position distinct
    assert sine_position_encoding_2d(3, 6).shape == (9, 6)  # dim not a multiple of 4

"""The fast path's fused decoder layers (fixtalk/nets/fused.py) equal the modules' own forwards:
style folded into the weights at batch 1 (where the weight is the smaller tensor), the input scaled
at larger batches, transposed convolution + blur + bias, ToFlow's logits; the derived-weight cache
follows in-place weight changes; gradients fall back to the module forward."""
from __future__ import annotations

import pytest
import torch

from fixtalk.nets.decoder import ToFlow
from fixtalk.nets.fused import flow_logits, styled_conv
from fixtalk.nets.layers import StyledConv
from tests.nets_common import one_torch_thread  # noqa: F401  (autouse fixture)

TOL = 2e-5


def layer(cin: int, cout: int, upsample: bool, seed: int = 0) -> StyledConv:
    torch.manual_seed(seed)
    m = StyledConv(cin, cout, 3, style_dim=16, upsample=upsample)
    with torch.no_grad():  # non-trivial biases (they start at zero / one)
        m.activate.bias.normal_(0, 0.3)
        m.conv.modulation.bias.normal_(1, 0.3)
    return m.eval()


# (cin, cout, size, batch): at batch 1 the 4-channel layer on 16x16 folds the style into its
# weight (144 weights < 1024 activations), the 32-channel one on 4x4 scales its input instead
@pytest.mark.parametrize("cin, cout, size, batch", [(4, 4, 16, 1), (32, 32, 4, 1), (4, 6, 16, 3)])
@pytest.mark.parametrize("upsample", [False, True])
def test_styled_conv_equals_module_forward(cin, cout, size, batch, upsample):
    m = layer(cin, cout, upsample)
    x, style = torch.randn(batch, cin, size, size), torch.randn(batch, 16)
    with torch.no_grad():
        want = m(x, style)
        got = styled_conv(m, x, style)
    assert got.shape == want.shape == (batch, cout, size * (2 if upsample else 1), size * (2 if upsample else 1))
    assert (got - want).abs().max() <= TOL * want.abs().max()
    assert (want < 0).any() and (want > 0).any()  # the activation's two slopes are both exercised


def test_cached_weights_follow_in_place_changes():
    m = layer(4, 4, upsample=True)
    x, style = torch.randn(1, 4, 8, 8), torch.randn(1, 16)
    with torch.no_grad():
        before = styled_conv(m, x, style)
        m.conv.weight.mul_(-1.5)  # an adaptation loading new weights does this in place
        m.conv.modulation.weight.add_(0.2)
        after, want = styled_conv(m, x, style), m(x, style)
    assert (after - before).abs().max() > 0.1
    assert (after - want).abs().max() <= TOL * want.abs().max()


@pytest.mark.parametrize("batch", [1, 2])
def test_flow_logits_and_blend_equal_module_forward(batch):
    torch.manual_seed(1)
    flow = ToFlow(8, 16).eval()
    with torch.no_grad():
        flow.conv.weight.mul_(0.2)
        flow.bias.normal_(0, 0.1)
    x, style, feat = torch.randn(batch, 8, 8, 8), torch.randn(batch, 16), torch.randn(batch, 8, 8, 8)
    skip = torch.randn(batch, 3, 4, 4)
    with torch.no_grad():
        want = flow(x, style, feat, skip)
        got = flow(x, style, feat, skip, fused=True)
        logits = flow_logits(flow.conv, flow.bias, x, style)
    torch.testing.assert_close(logits, flow.conv(x, style) + flow.bias, atol=1e-5, rtol=0)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=0)


def test_gradients_use_the_module_forward():
    m = layer(4, 4, upsample=False)
    x = torch.randn(1, 4, 8, 8, requires_grad=True)
    out = styled_conv(m, x, torch.randn(1, 16))
    out.sum().backward()  # the fused forward is in-place and would not be differentiable
    assert x.grad is not None and x.grad.abs().sum() > 0

"""Training loss terms on hand-made inputs whose right answer is known: the flow term under
relative flow, the landmark-weighted contour L1 and the head-track tie of the pose weights."""
from __future__ import annotations

import torch

from fixtalk.config import StageConfig


def test_flow_term_with_relative_flow_supervises_the_rendered_displacement():
    """With relative flow the decoder warps by tanh(c) - f_s, so that is what the flow term must
    compare with the known warp: zero loss when it matches, whatever the absolute flow is."""
    from fixtalk.nets.decoder import identity_grid
    from fixtalk.train.warp_targets import warp_loss

    torch.manual_seed(0)
    b, s = 2, 16
    logits = torch.randn(b, 3, s, s)
    target = identity_grid(s, torch.device("cpu"), torch.float32).permute(0, 3, 1, 2).repeat(b, 1, 1, 1)
    target = target + torch.tensor([0.1, -0.05]).view(1, 2, 1, 1)  # the known motion
    offsets = [(torch.tanh(logits[:, :2]) - torch.tensor([0.1, -0.05]).view(1, 2, 1, 1)).permute(0, 2, 3, 1)]
    mouth, valid = torch.zeros(b, 1, s, s), torch.ones(b, dtype=torch.bool)
    relative = warp_loss([logits], target, mouth, valid, 1.0, 0.0, offsets=offsets)["flow"]
    absolute = warp_loss([logits], target, mouth, valid, 1.0, 0.0)["flow"]
    assert float(relative) < 1e-6 < 0.1 < float(absolute)


def test_contour_l1_weighs_the_jaw_line_and_nose_not_the_rest():
    """An error on the jaw line counts several times what plain L1 gives it; the same error in a
    corner far from every jaw/nose point does not count at all (plain L1 sees both alike)."""
    from fixtalk.train.losses import CONTOUR_POINTS, contour_l1

    size = 64
    lm = torch.zeros(1, 68, 2)
    t = torch.linspace(0, 1, 17)
    lm[0, :17, 0], lm[0, :17, 1] = 16 + 32 * t, 24 + 16 * torch.sin(torch.pi * t)  # a jaw arc
    lm[0, 27:36] = torch.tensor([32.0, 30.0])  # the nose, bunched
    real = torch.zeros(1, 3, size, size)
    at_jaw, in_corner = real.clone(), real.clone()
    jx, jy = int(lm[0, 8, 0]), int(lm[0, 8, 1])
    at_jaw[..., jy - 2:jy + 3, jx - 2:jx + 3] = 1.0
    in_corner[..., 0:5, 59:64] = 1.0
    assert 8 in CONTOUR_POINTS and 30 in CONTOUR_POINTS and 48 not in CONTOUR_POINTS
    plain = float((at_jaw - real).abs().mean())
    assert plain == float((in_corner - real).abs().mean())
    assert float(contour_l1(at_jaw, real, lm)) > 4 * plain
    assert float(contour_l1(in_corner, real, lm)) < 1e-6


def test_pose_track_ties_each_pose_weight_to_its_own_head_track():
    """Pose weights equal to the six normalised head tracks cost nothing; a weight that reads a
    sideways shift as a turn (tx in the yaw slot) costs, and rows of real clips (NaN) are skipped."""
    from fixtalk.train.data_format import HEAD_TRACKS
    from fixtalk.train.stage_steps import track_term

    assert list(HEAD_TRACKS) == ["yaw", "pitch", "roll", "scale", "tx", "ty"]
    st = StageConfig(name="base", track=0.0, pose_track=2.0)
    head = torch.tensor([[[8.0, 0.0, -3.5, 1.05, 0.035, 0.0]], [[float("nan")] * 6]])
    batch = {"head": head}
    right = torch.tensor([[0.5, 0.0, -0.5, 1.0, 1.0, 0.0], [9.0, 9.0, 9.0, 9.0, 9.0, 9.0]])
    swapped = right.clone()
    swapped[0, [0, 4]] = right[0, [4, 0]]  # the shift read as yaw and the turn as shift
    lip = torch.zeros(2, 20)
    assert float(track_term(lip, batch, st, right)["pose_track"]) < 1e-10
    assert abs(float(track_term(lip, batch, st, swapped)["pose_track"]) - 2.0 * 0.5 ** 2 * 2 / 6) < 1e-6
    assert track_term(lip, {"head": head[1:]}, st, right[1:]) == {}

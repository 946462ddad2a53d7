"""Learning-rate schedules of a training stage (fixtalk.train.schedule) on a real optimizer."""
import pytest
import torch

from fixtalk.config import StageConfig
from fixtalk.train.schedule import lr_factor, set_learning_rate


def test_cosine_warms_up_then_decays_to_zero():
    st = StageConfig(steps=100, lr=0.01, lr_schedule="cosine", warmup_steps=10)
    factors = [lr_factor(st, i) for i in range(100)]
    assert factors[0] == pytest.approx(1 / 11)
    assert max(factors) == pytest.approx(1.0, abs=1e-3) and factors.index(max(factors)) in (9, 10)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))  # monotone after the warm-up
    assert factors[-1] < 0.001


def test_set_learning_rate_scales_each_group_from_its_own_base():
    w, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(1))
    opt = torch.optim.Adam([{"params": [w], "lr": 0.01, "base_lr": 0.01},
                            {"params": [b], "lr": 0.1, "base_lr": 0.1}])
    st = StageConfig(steps=10, lr=0.01, lr_schedule="cosine")
    set_learning_rate(opt, st, 5)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.005, 0.05])
    set_learning_rate(opt, StageConfig(lr_schedule="constant"), 5)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.01, 0.1])


def test_unknown_schedule_names_the_choices():
    with pytest.raises(ValueError, match="constant"):
        lr_factor(StageConfig(name="base", lr_schedule="linear"), 0)

"""CombinedLoss, UncertaintyWeightedLoss and ScheduledWeightLoss: sums, hooks, logging."""

from __future__ import annotations

import math

import pytest
import torch

from hybrid_unet.losses.adaptive import ScheduledWeightLoss, UncertaintyWeightedLoss
from hybrid_unet.losses.compound import CombinedLoss
from hybrid_unet.losses.cross_entropy import CrossEntropyLoss
from hybrid_unet.losses.deep_supervision import DeepSupervisionLoss
from hybrid_unet.losses.dice import SoftDiceLoss
from tests.losses.batches import make_batch


def _parts():
    return {"dice": SoftDiceLoss(include_background=False), "ce": CrossEntropyLoss()}


def test_combined_is_weighted_sum_and_logs_components():
    logits, target = make_batch(seed=21)
    loss = CombinedLoss(_parts(), {"dice": 2.0, "ce": 0.5})
    d = SoftDiceLoss(include_background=False)(logits, target)
    c = CrossEntropyLoss()(logits, target)
    torch.testing.assert_close(loss(logits, target), 2.0 * d + 0.5 * c)
    loss(logits, target)
    logged = loss.log_values()
    assert logged["dice"] == pytest.approx(d.item()) and logged["ce"] == pytest.approx(c.item())


def test_combined_default_weights_and_bad_names():
    loss = CombinedLoss(_parts())
    assert loss.weights == {"dice": 1.0, "ce": 1.0}
    with pytest.raises(ValueError, match=r"missing \['ce'\].*unknown \['dcie'\]"):
        CombinedLoss(_parts(), {"dcie": 1.0, "dice": 1.0})
    with pytest.raises(ValueError, match=">= 0"):
        CombinedLoss(_parts(), {"dice": -1.0, "ce": 1.0})
    with pytest.raises(ValueError):
        CombinedLoss({})


def test_uncertainty_weighting_formula_and_gradients():
    logits, target = make_batch(seed=23)
    # log variances that do not sum to 0, so the regulariser term counts
    loss = UncertaintyWeightedLoss(_parts(), init_log_vars={"dice": 0.5, "ce": 0.3})
    d = SoftDiceLoss(include_background=False)(logits, target)
    c = CrossEntropyLoss()(logits, target)
    expected = 0.5 * math.exp(-0.5) * d + 0.5 * math.exp(-0.3) * c + 0.5 * (0.5 + 0.3)
    total = loss(logits, target)
    torch.testing.assert_close(total, expected)
    total.backward()
    assert loss.log_vars.grad is not None and torch.isfinite(loss.log_vars.grad).all()
    assert [n for n, _ in loss.named_parameters()] == ["log_vars"]
    logged = loss.log_values()
    assert logged["weight/dice"] == pytest.approx(0.5 * math.exp(-0.5))
    assert logged["weight/ce"] == pytest.approx(0.5 * math.exp(-0.3))


def test_uncertainty_parameters_reach_optimizer_through_deep_supervision():
    loss = DeepSupervisionLoss(UncertaintyWeightedLoss(_parts()))
    params = list(loss.parameters())
    assert len(params) == 1 and params[0] is loss.loss.log_vars
    logits, target = make_batch(seed=24)
    loss([logits, logits[:, :, ::2, ::2, ::2]], target).backward()
    assert params[0].grad is not None and (params[0].grad != 0).all()
    with pytest.raises(ValueError, match="unknown"):
        UncertaintyWeightedLoss(_parts(), init_log_vars={"dice": 0.0, "ce": 0.0, "x": 1.0})


@pytest.mark.parametrize(("schedule", "mid"), [("linear", 0.5), ("cosine", 0.5)])
def test_scheduled_weights_move_from_start_to_end(schedule, mid):
    loss = ScheduledWeightLoss(
        _parts(), {"dice": 0.0, "ce": 1.0}, {"dice": 1.0, "ce": 0.0}, schedule=schedule
    )
    assert loss.current_weights() == {"dice": 0.0, "ce": 1.0}
    loss.update(0, 11)
    assert loss.current_weights() == pytest.approx({"dice": 0.0, "ce": 1.0})
    loss.update(5, 11)
    assert loss.current_weights()["dice"] == pytest.approx(mid)
    loss.update(10, 11)
    assert loss.current_weights() == pytest.approx({"dice": 1.0, "ce": 0.0})
    loss.update(99, 11)  # past the end: stays at the end weights
    assert loss.log_values()["weight/dice"] == pytest.approx(1.0)
    loss.update(2, 11)
    w = loss.current_weights()["dice"]
    assert w == pytest.approx(0.2 if schedule == "linear" else (1 - math.cos(math.pi * 0.2)) / 2)


def test_scheduled_loss_uses_current_weights_and_forwards_update():
    logits, target = make_batch(seed=25)
    inner = ScheduledWeightLoss(_parts(), {"dice": 1.0, "ce": 0.0}, {"dice": 0.0, "ce": 1.0})
    outer = CombinedLoss({"sched": inner})
    outer.update(1, 2)
    torch.testing.assert_close(outer(logits, target), CrossEntropyLoss()(logits, target))
    assert outer.log_values()["sched/weight/ce"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="schedule"):
        ScheduledWeightLoss(_parts(), {"dice": 1, "ce": 1}, {"dice": 1, "ce": 1}, "step")

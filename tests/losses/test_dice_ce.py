"""SoftDiceLoss, CrossEntropyLoss and DiceCELoss against MONAI and hand-made cases."""

from __future__ import annotations

import monai.losses
import pytest
import torch

from hybrid_unet.losses.compound import DiceCELoss
from hybrid_unet.losses.cross_entropy import CrossEntropyLoss
from hybrid_unet.losses.dice import SoftDiceLoss
from tests.losses.batches import make_batch

SETTINGS = [
    # include_background, batch, squared, smooth_nr, smooth_dr, empty_class
    (True, False, False, 1e-5, 1e-5, None),
    (False, False, False, 1e-5, 1e-5, None),
    (True, True, False, 1e-5, 1e-5, None),
    (False, True, True, 1.0, 1.0, None),
    (True, False, True, 0.0, 1e-5, 2),
    (False, False, False, 1e-5, 1e-5, 1),
    (False, True, False, 1.0, 0.5, 2),
]


@pytest.mark.parametrize(("bg", "batch", "squared", "snr", "sdr", "empty"), SETTINGS)
def test_soft_dice_matches_monai(bg, batch, squared, snr, sdr, empty):
    logits, target = make_batch(b=3, k=4, empty_class=empty, seed=1)
    ours = SoftDiceLoss(
        include_background=bg, batch_dice=batch, smooth=snr, smooth_dr=sdr, squared=squared
    )
    ref = monai.losses.DiceLoss(
        softmax=True,
        to_onehot_y=True,
        include_background=bg,
        batch=batch,
        smooth_nr=snr,
        smooth_dr=sdr,
        squared_pred=squared,
    )
    torch.testing.assert_close(ours(logits, target), ref(logits, target), atol=1e-5, rtol=1e-5)


def test_soft_dice_ignore_index_matches_monai():
    logits, target = make_batch(b=2, k=3, seed=2)
    target[:, :, 0] = 255
    ours = SoftDiceLoss(include_background=True, ignore_index=255)
    ref = monai.losses.DiceLoss(softmax=True, to_onehot_y=True, ignore_index=255)
    torch.testing.assert_close(ours(logits, target), ref(logits, target), atol=1e-5, rtol=1e-5)


def test_ignored_voxels_do_not_matter():
    logits, target = make_batch(seed=3)
    target[:, :, :2] = 9
    other = logits.clone()
    other[:, :, :2] = torch.randn_like(other[:, :, :2]) * 5
    for loss in (
        SoftDiceLoss(ignore_index=9),
        CrossEntropyLoss(ignore_index=9),
        DiceCELoss(ignore_index=9),
    ):
        torch.testing.assert_close(loss(logits, target), loss(other, target))


def _perfect_logits(target: torch.Tensor, k: int) -> torch.Tensor:
    onehot = torch.nn.functional.one_hot(target[:, 0], k).movedim(-1, 1).float()
    return (onehot * 2 - 1) * 30.0


@pytest.mark.parametrize("batch_dice", [False, True])
def test_perfect_prediction_gives_zero_dice(batch_dice):
    _, target = make_batch(k=3, seed=4)
    loss = SoftDiceLoss(include_background=False, batch_dice=batch_dice)
    assert loss(_perfect_logits(target, 3), target).item() < 1e-5


def test_worst_prediction_gives_one_dice():
    _, target = make_batch(k=3, seed=5)
    wrong = _perfect_logits((target + 1) % 3, 3)
    assert SoftDiceLoss(smooth=0.0)(wrong, target).item() == pytest.approx(1.0, abs=1e-5)


def test_dice_golden_value():
    # Two voxels, K=2: p(fg) = [0.5, 0.5] (zero logits), target fg = [1, 0].
    # fg Dice = 2*0.5 / (1 + 1) = 0.5, so the loss is 0.5.
    logits = torch.zeros(1, 2, 1, 1, 2)
    target = torch.tensor([1, 0]).view(1, 1, 1, 1, 2)
    loss = SoftDiceLoss(include_background=False, smooth=0.0)
    assert loss(logits, target).item() == pytest.approx(0.5)


def test_cross_entropy_matches_torch_with_weights_and_ignore():
    logits, target = make_batch(seed=6)
    target[0, :, 1] = -1
    w = [0.2, 1.0, 3.0]
    ours = CrossEntropyLoss(weight=w, ignore_index=-1)
    ref = torch.nn.CrossEntropyLoss(weight=torch.tensor(w), ignore_index=-1)
    torch.testing.assert_close(ours(logits, target), ref(logits, target[:, 0]))


def test_cross_entropy_all_ignored_is_zero_not_nan():
    logits, target = make_batch(seed=7)
    target.fill_(255)
    logits.requires_grad_(True)
    loss = CrossEntropyLoss(ignore_index=255)(logits, target)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize(
    ("bg", "batch", "empty", "wd", "wc"),
    [
        (True, False, None, 1.0, 1.0),
        (False, False, 2, 1.0, 1.0),
        (False, True, None, 0.3, 1.7),
        (True, True, 1, 2.0, 0.0),
    ],
)
def test_dice_ce_matches_monai(bg, batch, empty, wd, wc):
    logits, target = make_batch(b=2, k=3, empty_class=empty, seed=8)
    ours = DiceCELoss(
        include_background=bg, batch_dice=batch, smooth=1e-5, dice_weight=wd, ce_weight=wc
    )
    ref = monai.losses.DiceCELoss(
        softmax=True,
        to_onehot_y=True,
        include_background=bg,
        batch=batch,
        smooth_nr=1e-5,
        smooth_dr=1e-5,
        lambda_dice=wd,
        lambda_ce=wc,
    )
    torch.testing.assert_close(ours(logits, target), ref(logits, target), atol=1e-5, rtol=1e-5)


def test_dice_ce_passes_squared_and_class_weights_to_its_terms():
    logits, target = make_batch(b=2, k=3, seed=10)
    weights = [0.2, 1.0, 3.0]
    loss = DiceCELoss(squared=True, class_weights=weights, dice_weight=0.7, ce_weight=1.3)
    dice = monai.losses.DiceLoss(softmax=True, to_onehot_y=True, include_background=False,
                                 squared_pred=True)(logits, target)  # fmt: skip
    ce = torch.nn.CrossEntropyLoss(weight=torch.tensor(weights))(logits, target[:, 0])
    torch.testing.assert_close(loss(logits, target), 0.7 * dice + 1.3 * ce, atol=1e-5, rtol=1e-5)


def test_dice_ce_logs_components_in_training_only():
    logits, target = make_batch(seed=9)
    loss = DiceCELoss()
    total = loss(logits, target)
    logged = loss.log_values()
    assert set(logged) == {"dice", "ce"}
    assert logged["dice"] + logged["ce"] == pytest.approx(total.item(), rel=1e-5)
    assert loss.log_values() == {}  # reset after reading
    loss.eval()
    loss(logits, target)
    assert loss.log_values() == {}


@pytest.mark.parametrize(
    "bad",
    [
        {"smooth": -1.0},
        {"dice_weight": -0.5},
    ],
)
def test_dice_ce_rejects_bad_arguments(bad):
    with pytest.raises(ValueError):
        DiceCELoss(**bad)


def test_shape_and_dtype_errors():
    logits, target = make_batch()
    loss = SoftDiceLoss()
    with pytest.raises(ValueError, match="integer"):
        loss(logits, target.float())
    with pytest.raises(ValueError, match=r"\(B, 1"):
        loss(logits, target.repeat(1, 2, 1, 1, 1))
    with pytest.raises(ValueError, match="outside"):
        loss(logits, target + 5)

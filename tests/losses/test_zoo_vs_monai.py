"""Focal, Tversky, Focal-Tversky and Generalized Dice against MONAI and hand-made values."""

from __future__ import annotations

import monai.losses
import pytest
import torch

from hybrid_unet.losses.compound import DiceFocalLoss
from hybrid_unet.losses.cross_entropy import CrossEntropyLoss, FocalLoss
from hybrid_unet.losses.dice import (
    FocalTverskyLoss,
    GeneralizedDiceLoss,
    SoftDiceLoss,
    TverskyLoss,
)
from tests.losses.batches import make_batch

TOL = {"atol": 1e-5, "rtol": 1e-5}


@pytest.mark.parametrize(
    ("gamma", "alpha"), [(2.0, None), (0.0, None), (1.5, 0.25), (2.0, [0.1, 0.6, 0.3])]
)
def test_focal_matches_monai(gamma, alpha):
    logits, target = make_batch(b=2, k=3, seed=11)
    ours = FocalLoss(gamma=gamma, alpha=alpha)
    ref = monai.losses.FocalLoss(
        use_softmax=True, to_onehot_y=True, include_background=True, gamma=gamma, alpha=alpha
    )
    # MONAI's mean also runs over the K class channels (all but one are 0): a factor K.
    torch.testing.assert_close(ours(logits, target), 3 * ref(logits, target), **TOL)


def test_focal_with_ignore_matches_monai():
    # With an ignore mask MONAI divides by the number of valid voxels, as we do.
    logits, target = make_batch(b=2, k=3, seed=12)
    target[:, :, 0] = 7
    ours = FocalLoss(gamma=2.0, ignore_index=7)
    ref = monai.losses.FocalLoss(use_softmax=True, to_onehot_y=True, gamma=2.0, ignore_index=7)
    torch.testing.assert_close(ours(logits, target), ref(logits, target), **TOL)


def test_focal_gamma0_is_cross_entropy():
    logits, target = make_batch(seed=13)
    torch.testing.assert_close(
        FocalLoss(gamma=0.0)(logits, target), CrossEntropyLoss()(logits, target)
    )


def test_focal_rejects_bad_alpha():
    with pytest.raises(ValueError):
        FocalLoss(alpha=1.5)
    logits, target = make_batch(k=3)
    with pytest.raises(ValueError, match="K=3"):
        FocalLoss(alpha=[0.5, 0.5])(logits, target)


@pytest.mark.parametrize(
    ("alpha", "beta", "bg", "batch", "empty"),
    [
        (0.5, 0.5, True, False, None),
        (0.3, 0.7, False, False, None),
        (0.7, 0.3, False, True, 2),
        (0.2, 0.8, True, True, 1),
    ],
)
def test_tversky_matches_monai(alpha, beta, bg, batch, empty):
    logits, target = make_batch(b=3, k=3, empty_class=empty, seed=14)
    ours = TverskyLoss(alpha=alpha, beta=beta, include_background=bg, batch_dice=batch, smooth=1e-5)
    ref = monai.losses.TverskyLoss(
        softmax=True, to_onehot_y=True, include_background=bg, batch=batch, alpha=alpha, beta=beta
    )
    torch.testing.assert_close(ours(logits, target), ref(logits, target), **TOL)


def test_tversky_smoothing_terms_match_monai():
    logits, target = make_batch(b=2, k=3, seed=19)
    ours = TverskyLoss(alpha=0.3, beta=0.7, smooth=1.0, smooth_dr=0.5)
    ref = monai.losses.TverskyLoss(
        softmax=True, to_onehot_y=True, alpha=0.3, beta=0.7, smooth_nr=1.0, smooth_dr=0.5
    )
    torch.testing.assert_close(ours(logits, target), ref(logits, target), **TOL)


def test_focal_tversky_is_near_zero_at_a_perfect_prediction():
    target = make_batch(seed=20)[1]
    logits = torch.nn.functional.one_hot(target[:, 0], 3).permute(0, 4, 1, 2, 3) * 40.0
    logits.requires_grad_(True)
    loss = FocalTverskyLoss(gamma=0.75, smooth=0.0)(logits, target)
    assert loss.item() < 1e-4  # (1e-6)^0.75 = 3e-5: the clamp only keeps the gradient finite
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_tversky_half_half_is_dice():
    logits, target = make_batch(seed=15)
    torch.testing.assert_close(
        TverskyLoss(alpha=0.5, beta=0.5)(logits, target), SoftDiceLoss()(logits, target)
    )


def test_focal_tversky_gamma1_is_tversky_and_gamma_changes_it():
    logits, target = make_batch(seed=16)
    tv = TverskyLoss(include_background=False)(logits, target)
    torch.testing.assert_close(
        FocalTverskyLoss(gamma=1.0, include_background=False)(logits, target), tv
    )
    assert FocalTverskyLoss(gamma=0.75, include_background=False)(logits, target) > tv


@pytest.mark.parametrize(
    ("bg", "batch", "empty", "w_type"),
    [
        (True, False, None, "square"),
        (False, False, None, "square"),
        (False, False, 2, "square"),
        (True, True, 1, "square"),
        (False, True, None, "simple"),
        (True, False, 2, "uniform"),
    ],
)
def test_generalized_dice_matches_monai(bg, batch, empty, w_type):
    logits, target = make_batch(b=2, k=4, empty_class=empty, seed=17)
    ours = GeneralizedDiceLoss(include_background=bg, batch_dice=batch, w_type=w_type)
    ref = monai.losses.GeneralizedDiceLoss(
        softmax=True, to_onehot_y=True, include_background=bg, batch=batch, w_type=w_type
    )
    torch.testing.assert_close(ours(logits, target), ref(logits, target), **TOL)


def test_generalized_dice_rejects_unknown_weight():
    with pytest.raises(ValueError, match="w_type"):
        GeneralizedDiceLoss(w_type="cube")


@pytest.mark.parametrize("ignore", [None, 7])
def test_dice_focal_is_the_weighted_sum(ignore):
    logits, target = make_batch(seed=18)
    if ignore is not None:
        target[:, :, :2] = ignore  # both terms must leave these voxels out
    loss = DiceFocalLoss(dice_weight=0.5, focal_weight=2.0, gamma=2.0, ignore_index=ignore)
    dice = SoftDiceLoss(include_background=False, ignore_index=ignore)(logits, target)
    focal = FocalLoss(gamma=2.0, ignore_index=ignore)(logits, target)  # checked against MONAI
    torch.testing.assert_close(loss(logits, target), 0.5 * dice + 2.0 * focal, **TOL)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_focal_gradient_finite_when_saturated(gamma):
    logits = torch.zeros(1, 3, 2, 2, 2)
    logits[:, 1] = 200.0
    logits.requires_grad_(True)
    FocalLoss(gamma=gamma)(logits, torch.ones(1, 1, 2, 2, 2, dtype=torch.long)).backward()
    assert torch.isfinite(logits.grad).all()

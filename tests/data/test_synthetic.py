"""The phantom generator: deterministic, labelled as promised, and not solvable by a threshold."""

from __future__ import annotations

import numpy as np
import pytest

from hybrid_unet.data.synthetic import PhantomSource, make_phantom
from hybrid_unet.metrics import dice_per_class


def test_same_seed_same_phantom_and_different_seeds_differ():
    a_img, a_lab = make_phantom(seed=3, index=1, shape=(32, 32, 32))
    b_img, b_lab = make_phantom(seed=3, index=1, shape=(32, 32, 32))
    c_img, _ = make_phantom(seed=4, index=1, shape=(32, 32, 32))
    d_img, _ = make_phantom(seed=3, index=2, shape=(32, 32, 32))
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)
    assert not np.allclose(a_img, c_img) and not np.allclose(a_img, d_img)


def test_every_class_present_with_plausible_sizes():
    source = PhantomSource(num_cases=6, shape=(40, 40, 40), num_classes=4, seed=0)
    for name in source.case_names():
        case = source.load(name)
        assert case.image.shape == (1, 40, 40, 40) and case.image.dtype == np.float32
        counts = np.bincount(case.label.ravel(), minlength=4)
        assert (counts[1:] > 50).all(), counts  # each structure is there
        assert counts[0] > 0.6 * case.label.size  # mostly background
        assert abs(case.image.mean()) < 1e-3 and abs(case.image.std() - 1) < 1e-3


def test_intensity_threshold_does_not_solve_it():
    """The best per-class intensity window scores well below what training must reach (0.70)."""
    source = PhantomSource(num_cases=4, shape=(40, 40, 40), num_classes=4, seed=1)
    scores = []
    for name in source.case_names():
        case = source.load(name)
        image = case.image[0]
        pred = np.zeros_like(case.label)
        for cls in range(1, 4):  # an oracle window: the class's own 10th-90th percentile
            lo, hi = np.percentile(image[case.label == cls], [10, 90])
            pred[(image >= lo) & (image <= hi)] = cls
        scores.append(np.nanmean(dice_per_class(pred, case.label, 4)))
    assert np.mean(scores) < 0.6, scores


@pytest.mark.parametrize("bad", [{"num_cases": 1}, {"num_classes": 1}, {"shape": (8, 8, 8)}])
def test_bad_arguments_are_refused(bad):
    with pytest.raises(ValueError):
        PhantomSource(**bad)

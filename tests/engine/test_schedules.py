"""Warmup-poly: linear warmup, poly decay to zero, a pure function of the step."""

from __future__ import annotations

import pytest
import torch

from hybrid_unet.engine.schedules import warmup_poly, warmup_poly_factor


def test_factor_by_hand():
    assert warmup_poly_factor(0, 100, 10, 0.9) == pytest.approx(0.1)
    assert warmup_poly_factor(9, 100, 10, 0.9) == pytest.approx(1.0)
    assert warmup_poly_factor(10, 100, 10, 0.9) == pytest.approx(1.0)
    assert warmup_poly_factor(55, 100, 10, 0.9) == pytest.approx(0.5**0.9)
    assert warmup_poly_factor(100, 100, 10, 0.9) == 0.0
    assert warmup_poly_factor(500, 100, 10, 0.9) == 0.0


def _lrs(lr: float, steps: int, **schedule) -> list[float]:
    """The learning rate of each of ``steps`` SGD steps under ``warmup_poly(exponent=1)``."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = warmup_poly(opt, exponent=1.0, **schedule)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_scheduler_steps_follow_the_factor():
    lrs = _lrs(0.5, steps=20, total_steps=20, warmup_steps=4)
    assert lrs[:4] == pytest.approx([0.125, 0.25, 0.375, 0.5])
    assert lrs[4] == pytest.approx(0.5) and lrs[12] == pytest.approx(0.25)


def test_bad_horizon_is_refused():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    with pytest.raises(ValueError, match="total_steps"):
        warmup_poly(opt, total_steps=0)


def test_a_warmup_longer_than_the_run_is_cut_so_the_lr_still_peaks_and_decays():
    """A smoke test of 3 steps with the default 50 warmup steps: without the cut its LR would
    climb to 3/50 of the peak and never decay."""
    lrs = _lrs(1.0, steps=4, total_steps=3, warmup_steps=50)
    assert lrs == pytest.approx([0.5, 1.0, 1.0, 0.0])

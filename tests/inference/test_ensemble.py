"""An ensemble of runs trained with different windows: each member predicts with its own."""

from __future__ import annotations

import numpy as np
import pytest

from tests.inference.conftest import make_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A 4-stage run (total stride 8) with a 24^3 window and a 5-stage one (16) with 32^3."""
    small = tmp_path_factory.mktemp("run_patch24")
    make_run(small, seed=0, overrides=["data.patch_size=[24,24,24]"])
    large = tmp_path_factory.mktemp("run_patch32")
    five = ["model.features=[4,8,16,32,64]", "model.depths=[1,1,1,1,1]",
            "model.stage_blocks=[conv,conv,conv,conv,mbconv]",
            f"model.strides=[[1,1,1]{',[2,2,2]' * 4}]"]  # fmt: skip
    make_run(large, seed=1, overrides=five)
    return small, large


def test_each_member_predicts_with_its_own_patch_size(runs):
    from hybrid_unet.inference.predictor import Predictor

    small, large = runs
    image = np.random.default_rng(0).standard_normal((1, 40, 56, 40)).astype(np.float32)
    alone = [next(Predictor(run, "cpu").members(image)) for run in (small, large)]

    for order in ((small, large), (large, small)):
        ensemble = Predictor(list(order), "cpu")
        members = list(ensemble.members(image))
        expected = alone if order[0] is small else alone[::-1]
        for got, want in zip(members, expected, strict=True):
            np.testing.assert_allclose(got, want, atol=1e-6)
        assert ensemble.patch_sizes == [(24, 24, 24) if r is small else (32, 32, 32) for r in order]
        np.testing.assert_allclose(ensemble.probabilities(image), np.mean(alone, axis=0), atol=1e-6)

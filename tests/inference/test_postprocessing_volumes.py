"""Largest-component post-processing, its stored decision, and the volume table."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from hybrid_unet.inference.postprocessing import (
    decide_largest_component,
    keep_largest_component,
    stored_classes,
)
from hybrid_unet.inference.volumes import structure_volumes


def blobs() -> np.ndarray:
    label = np.zeros((10, 12, 14), np.uint8)
    label[1:4, 1:5, 1:6] = 1  # 3 x 4 x 5 = 60 voxels
    label[7:9, 8:10, 10:12] = 2  # 2 x 2 x 2 = 8 voxels
    label[6, 6, 6] = 2  # one more voxel, touching nothing: a second component
    return label


def test_volumes_match_a_hand_computation_at_a_non_1mm_spacing():
    # voxel = 2.5 x 0.7 x 1.3 = 2.275 mm^3; 60 voxels = 136.5 mm^3; 9 voxels = 20.475 mm^3
    row = structure_volumes(blobs(), (2.5, 0.7, 1.3), {0: "bg", 1: "head", 2: "tail"})
    assert row == {"head_ml": 0.1365, "head_components": 1,
                   "tail_ml": 0.020475, "tail_components": 2}  # fmt: skip


def test_components_follow_the_connectivity():
    label = np.zeros((5, 5, 5), np.uint8)
    label[1, 1, 1] = label[2, 2, 2] = 1  # corners touch
    assert structure_volumes(label, (1, 1, 1), {1: "a"}, connectivity=3)["a_components"] == 1
    assert structure_volumes(label, (1, 1, 1), {1: "a"}, connectivity=1)["a_components"] == 2


def test_keep_largest_component_only_touches_listed_classes():
    label = blobs()
    label[8, 1, 1] = 1  # a stray voxel of class 1
    kept = keep_largest_component(label, [1])
    assert kept[8, 1, 1] == 0 and (kept == 1).sum() == 60
    assert (kept == 2).sum() == 9  # class 2 not listed: both components stay


def test_decision_keeps_a_class_only_where_it_helps():
    ref = blobs()  # class 2 really has two components
    pred = ref.copy()
    pred[8, 1, 1] = 1  # a false-positive island of class 1
    decision = decide_largest_component([(pred, ref)], num_classes=3)
    assert decision["largest_component"] == [1]
    assert decision["dice"]["1"]["after"] > decision["dice"]["1"]["before"]
    assert decision["dice"]["2"]["after"] < decision["dice"]["2"]["before"]


def test_stored_decision_is_applied_by_the_predictor(tiny_run, tmp_path):
    from hybrid_unet.data.io.geometry import Geometry
    from hybrid_unet.inference.predictor import Predictor

    run = shutil.copytree(tiny_run, tmp_path / "run")
    assert stored_classes([run]) == []
    (run / "postprocessing.json").write_text(json.dumps({"largest_component": [1, 2]}))
    predictor = Predictor(run, "cpu")
    assert predictor.largest_component == [1, 2]
    image = np.random.default_rng(0).standard_normal((1, 20, 30, 24)).astype(np.float32)
    label = predictor.predict(image, Geometry.from_spacing((1.0, 1.0, 1.0)))
    for c in (1, 2):
        assert structure_volumes(label, (1, 1, 1), {c: "x"})["x_components"] <= 1
    assert Predictor(run, "cpu", largest_component=[]).largest_component == []


@pytest.mark.parametrize("samples", [0, 3])
def test_ensemble_and_mc_dropout_members(tiny_run, tiny_run_b, samples):
    from hybrid_unet.inference.predictor import Predictor

    predictor = Predictor([tiny_run, tiny_run_b], "cpu", mc_dropout_samples=samples)
    image = np.random.default_rng(1).standard_normal((1, 32, 32, 32)).astype(np.float32)
    members = list(predictor.members(image))
    assert len(members) == predictor.num_members == 2 * max(1, samples)
    assert not np.allclose(members[0], members[-1])  # two networks (or dropout samples) differ
    if not samples:  # deterministic members: the ensemble is their mean
        mean = np.mean(members, axis=0)
        np.testing.assert_allclose(predictor.probabilities(image), mean, atol=1e-6)

"""evaluate: per-case CSV, summary with mean and sd per class, stored post-processing decision."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from hybrid_unet.data.io.geometry import Geometry
from hybrid_unet.data.io.nifti import write_nifti
from hybrid_unet.evaluate import main
from hybrid_unet.inference.postprocessing import stored_classes


def test_metrics_csv_summary_and_postprocessing_decision(tmp_path):
    geometry = Geometry.from_spacing((1.5, 1.0, 1.0))
    ref = np.zeros((8, 10, 10), np.uint8)
    ref[2:6, 2:6, 2:6] = 1
    perfect, island = ref.copy(), ref.copy()
    island[7, 9, 9] = 1  # a stray voxel: Dice 128 / 129.5
    for name, pred in [("a.nii.gz", perfect), ("b.nii.gz", island)]:
        write_nifti(tmp_path / "ref" / name, ref, geometry)
        write_nifti(tmp_path / "pred" / name, pred, geometry)
    run = tmp_path / "run"
    run.mkdir()
    code = main([str(tmp_path / "pred"), str(tmp_path / "ref"), "--num-classes", "2",
                 "--metrics", "dice,hd95", "--out", str(tmp_path / "scores"),
                 "--decide-postprocessing", str(run)])  # fmt: skip
    assert code == 0
    rows = list(csv.DictReader((tmp_path / "scores" / "metrics.csv").open()))
    assert [r["case"] for r in rows] == ["a.nii.gz", "b.nii.gz"]
    dice_b = 2 * 64 / (2 * 64 + 1)
    assert float(rows[1]["dice_1"]) == pytest.approx(dice_b)
    summary = json.loads((tmp_path / "scores" / "summary.json").read_text())
    stats = summary["per_class"]["dice_1"]
    assert stats["mean"] == pytest.approx((1 + dice_b) / 2)
    assert stats["sd"] == pytest.approx((1 - dice_b) / 2) and stats["n"] == 2
    assert summary["mean_over_classes"]["mean_dice"] == pytest.approx(stats["mean"])
    assert stored_classes([run]) == [1]  # the island removal raised class 1's mean Dice

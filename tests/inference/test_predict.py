"""Predict on real scans with a trained run: output in the scan's own geometry, then evaluate."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from tests.helpers import run_train


@pytest.mark.slow
@pytest.mark.real_data
def test_train_predict_evaluate_on_hippocampus(shared_data, tmp_path):
    root = shared_data / "hippocampus"
    cache = tmp_path / "cache"
    run = run_train(["data=hippocampus", f"data.source.root={root}", f"data.source.cache_dir={cache}",
                     "+preset=quick_test", "trainer.max_epochs=1", "trainer.steps_per_epoch=2",
                     "data.max_val_cases=2", "trainer.progress=false", "run_name=r"], tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    run_dir = tmp_path / "runs" / "r"

    scans = tmp_path / "scans"
    scans.mkdir()
    names = ["hippocampus_001.nii.gz", "hippocampus_003.nii.gz"]
    for name in names:
        shutil.copy(root / "imagesTr" / name, scans / name)
    out = tmp_path / "pred"
    result = subprocess.run(
        [sys.executable, "-m", "hybrid_unet.predict", f"checkpoints={run_dir}", f"input={scans}",
         f"output={out}", "sliding_window.mirror_axes=[0,1,2]"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    for name in names:
        source, pred = nib.load(scans / name), nib.load(out / name)
        assert pred.shape == source.shape
        np.testing.assert_allclose(pred.affine, source.affine, atol=1e-5)
        assert set(np.unique(np.asarray(pred.dataobj))) <= {0, 1, 2}

    evaluation = subprocess.run(
        [sys.executable, "-m", "hybrid_unet.evaluate", str(out), str(root / "labelsTr"),
         "--num-classes", "3", "--out", str(tmp_path / "eval")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert evaluation.returncode == 0, evaluation.stderr
    assert "mean_dice" in evaluation.stdout and "2 cases" in evaluation.stdout
    assert (tmp_path / "eval" / "metrics.csv").read_text().count("\n") == 3  # header + 2 cases
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert {"mean", "sd", "n"} <= set(summary["per_class"]["dice_1"])

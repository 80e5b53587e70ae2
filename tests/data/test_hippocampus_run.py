"""End to end on the real hippocampus data: plan, preprocess into a fresh cache, train, validate."""

from __future__ import annotations

import csv
import json

import pytest

from tests.helpers import run_train

pytestmark = [pytest.mark.slow, pytest.mark.real_data]


def test_hippocampus_quick_run(shared_data, tmp_path):
    result = run_train(
        [
            "data=hippocampus",
            f"data.source.root={shared_data / 'hippocampus'}",
            f"data.source.cache_dir={tmp_path / 'cache'}",
            "+preset=quick_test",
            "trainer.max_epochs=1",
            "trainer.steps_per_epoch=3",
            "data.max_val_cases=3",
            "trainer.progress=false",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "patch size" in result.stdout and "spacing (D, H, W) mm" in result.stdout  # plan table

    (run_dir,) = (p for p in (tmp_path / "runs").iterdir() if p.is_dir())
    plan = json.loads((run_dir / "plan.json").read_text())
    assert plan["spacing"] == pytest.approx([1.0, 1.0, 1.0])
    # The median case is 36 x 51 x 35 at 1 mm, rounded up to the total stride of 8.
    for planned, expected in zip(plan["patch_size"], (40, 56, 40), strict=True):
        assert abs(planned - expected) <= 8, plan["patch_size"]

    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and "mean_dice" in rows[-1] and rows[-1]["mean_dice"] not in ("", None)

"""nnU-Net v2's ignore label: unannotated voxels are left out of sampling, loss and metrics."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from hybrid_unet.config.errors import ConfigError
from hybrid_unet.data.patches import _foreground_locations
from hybrid_unet.engine.build import fill_ignore_index
from hybrid_unet.engine.checkpoint import load_checkpoint
from hybrid_unet.metrics import case_metrics
from tests.fixtures.bad_inputs import train_args
from tests.helpers import cli

IGNORE = 3


def write_sparse_dataset(root: Path, num_cases: int = 4, shape=(32, 32, 32)) -> Path:
    """nnU-Net v2 layout; each label has classes 1 and 2, and its last 8 x-slices unannotated."""
    rng = np.random.default_rng(0)
    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for i in range(num_cases):
        label = np.zeros(shape, np.uint8)
        label[6:16, 8:24, 8:24] = 1
        label[16:24, 8:24, 8:24] = 2
        label[24:] = IGNORE
        image = rng.normal(0, 1, shape).astype(np.float32) + 2.0 * (label == 1) - 2.0 * (label == 2)
        nib.save(nib.Nifti1Image(image, np.eye(4)), str(root / "imagesTr" / f"c{i}_0000.nii.gz"))
        nib.save(nib.Nifti1Image(label, np.eye(4)), str(root / "labelsTr" / f"c{i}.nii.gz"))
    meta = {"channel_names": {"0": "MRI"}, "numTraining": num_cases, "file_ending": ".nii.gz",
            "labels": {"background": 0, "a": 1, "b": 2, "ignore": IGNORE}}  # fmt: skip
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_a_sparse_dataset_trains_with_the_ignore_label_out_of_loss_and_metrics(tmp_path):
    """It was refused at start-up ('not supported; relabel those voxels')."""
    root = write_sparse_dataset(tmp_path / "Dataset010")
    args = [
        *train_args(root, tmp_path / "cache"),
        "run_name=r",
        "loss=combined",
        "data.num_folds=2",
    ]
    result = cli(args, tmp_path)
    assert result.code == 0, result.stderr[-3000:]
    assert "ignore label 3 is left out of the loss and the metrics" in result.stdout
    run = tmp_path / "runs" / "r"
    config = load_checkpoint(run / "checkpoints" / "last.pt")["config"]
    terms = config["loss"]["losses"]
    assert {name: t["ignore_index"] for name, t in terms.items()} == dict.fromkeys(terms, 3)
    with open(run / "validation_cases.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(0.0 <= float(r["dice_1"]) <= 1.0 for r in rows)
    assert set(rows[0]) >= {"dice_1", "dice_2"} and "dice_3" not in rows[0]


def test_foreground_sampling_never_aims_at_unannotated_voxels():
    label = np.zeros((4, 4, 4), np.uint8)
    label[0, 0, :2] = 1
    label[3] = IGNORE
    locations = _foreground_locations(label, "c", ignore_label=IGNORE)
    assert [len(c) for c in locations] == [2]
    assert len(_foreground_locations(label, "c")) == 2  # without it: a class of its own


def test_metrics_leave_the_ignored_voxels_out():
    """Class 1 along one row: reference 1 1 ignore 0, prediction 1 0 1 1. With the ignored
    voxel left out: TP 1, FP 1 (the last voxel), FN 1, so Dice 2 / 4; counting the predicted 1
    on the unannotated voxel as a false positive would give 2 / 5."""
    ref = np.array([1, 1, IGNORE, 0]).reshape(1, 1, 4)
    pred = np.array([1, 0, 1, 1]).reshape(1, 1, 4)
    values = case_metrics(pred, ref, 3, names=("dice", "precision"), ignore_label=IGNORE)
    assert values["dice_1"] == pytest.approx(0.5) and values["precision_1"] == pytest.approx(0.5)
    assert np.isnan(values["dice_2"])  # class 2 in neither map


def test_each_term_of_a_loss_gets_the_ignore_label_or_the_loss_is_refused():
    combined = {"_target_": "hybrid_unet.losses.compound.CombinedLoss",
                "losses": {"dice": {"_target_": "hybrid_unet.losses.dice.SoftDiceLoss"},
                           "ce": {"_target_": "hybrid_unet.losses.cross_entropy.CrossEntropyLoss",
                                  "ignore_index": IGNORE}}}  # fmt: skip
    assert fill_ignore_index(combined, IGNORE) == ["loss.losses.dice.ignore_index"]
    assert combined["losses"]["dice"]["ignore_index"] == IGNORE
    with pytest.raises(ConfigError, match=r"'loss.ignore_index' is 2 but the dataset's ignore"):
        fill_ignore_index({"_target_": "hybrid_unet.losses.dice.SoftDiceLoss",
                           "ignore_index": 2}, IGNORE)  # fmt: skip
    with pytest.raises(ConfigError, match=r"'loss': torch.nn.MSELoss cannot leave out"):
        fill_ignore_index({"_target_": "torch.nn.MSELoss"}, IGNORE)


def test_evaluate_leaves_the_ignored_voxels_out(tmp_path, capsys):
    from hybrid_unet.evaluate import main

    for folder, values in (("pred", [1, 0, 1, 1]), ("ref", [1, 1, IGNORE, 0])):
        (tmp_path / folder).mkdir()
        data = np.array(values, np.uint8).reshape(4, 1, 1)
        nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / folder / "c.nii.gz"))
    args = [str(tmp_path / "pred"), str(tmp_path / "ref"), "--num-classes", "3"]
    assert main(args) == 2
    assert "is it an ignore label: --ignore-label" in capsys.readouterr().err
    assert main([*args, "--ignore-label", "3", "--metrics", "dice"]) == 0
    assert "mean_dice        0.5000" in capsys.readouterr().out
    assert main([*args, "--ignore-label", "2"]) == 2
    assert "--ignore-label 2 is one of the --num-classes 3 classes" in capsys.readouterr().err

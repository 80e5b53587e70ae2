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
    (run / ".hydra").mkdir(parents=True)  # a run dir, as --decide-postprocessing requires
    code = main([str(tmp_path / "pred"), str(tmp_path / "ref"), "--num-classes", "2",
                 "--metrics", "dice,hd95", "--out", str(tmp_path / "scores"),
                 "--decide-postprocessing", str(run)])  # fmt: skip
    assert code == 0
    rows = list(csv.DictReader((tmp_path / "scores" / "metrics.csv").open()))
    assert [r["case"] for r in rows] == ["a", "b"]  # case names, as validation_cases.csv
    dice_b = 2 * 64 / (2 * 64 + 1)
    assert float(rows[1]["dice_1"]) == pytest.approx(dice_b)
    summary = json.loads((tmp_path / "scores" / "summary.json").read_text())
    stats = summary["per_class"]["dice_1"]
    assert stats["mean"] == pytest.approx((1 + dice_b) / 2)
    # The sample sd (n - 1), as crossval reports it.
    assert stats["sd"] == pytest.approx((1 - dice_b) / 2**0.5) and stats["n"] == 2
    assert summary["mean_over_classes"]["mean_dice"] == pytest.approx(stats["mean"])
    assert stored_classes([run]) == [1]  # the island removal raised class 1's mean Dice


def _cube(label: int = 1) -> np.ndarray:
    ref = np.zeros((8, 10, 10), np.uint8)
    ref[2:6, 2:6, 2:6] = label
    return ref


def _pairs(root, names, geometry=None, pred_only=(), ref_only=()):
    """``root/pred`` and ``root/ref`` holding the same cube under ``names``."""
    geometry = geometry or Geometry.from_spacing((1.0, 1.0, 1.0))
    for name in names:
        write_nifti(root / "ref" / name, _cube(), geometry)
        write_nifti(root / "pred" / name, _cube(), geometry)
    for name in pred_only:
        write_nifti(root / "pred" / name, _cube(), geometry)
    for name in ref_only:
        write_nifti(root / "ref" / name, _cube(), geometry)
    return [str(root / "pred"), str(root / "ref"), "--num-classes", "3", "--metrics", "dice"]


def _one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err and not captured.out  # stopped before any work
    return lines[0]


def test_predictions_without_a_reference_are_refused_before_writing(tmp_path, capsys):
    extra = [f"x{i}.nii.gz" for i in range(7)]
    args = _pairs(tmp_path, ["a.nii.gz"], pred_only=extra)
    assert main([*args, "--out", str(tmp_path / "scores")]) == 2
    line = _one_error_line(capsys)
    assert "7 prediction(s)" in line and "x0.nii.gz, x1.nii.gz" in line and "2 more" in line
    assert "a.nii.gz" not in line
    assert not (tmp_path / "scores").exists()


def test_references_without_a_prediction_stay_allowed(tmp_path, capsys):
    args = _pairs(tmp_path, ["a.nii.gz"], ref_only=["b.nii.gz"])
    assert main(args) == 0
    assert "1 cases; 1 references without a prediction" in capsys.readouterr().out


@pytest.mark.parametrize("holder", ["pred", "ref"])
def test_a_label_outside_the_classes_names_its_file(tmp_path, capsys, holder):
    args = _pairs(tmp_path, ["a.nii.gz"])
    write_nifti(tmp_path / holder / "a.nii.gz", _cube(7), Geometry.from_spacing((1.0, 1.0, 1.0)))
    assert main(args) == 2
    line = _one_error_line(capsys)
    assert f"{tmp_path / holder / 'a.nii.gz'}: 64 voxels hold labels outside [0, 3)" in line


def test_every_bad_pair_is_named_in_one_run(tmp_path, capsys):
    args = _pairs(tmp_path, ["a.nii.gz", "b.nii.gz", "c.nii.gz"])
    write_nifti(tmp_path / "ref" / "a.nii.gz", _cube(7), Geometry.from_spacing((1.0, 1.0, 1.0)))
    write_nifti(tmp_path / "pred" / "c.nii.gz", _cube(), Geometry.from_spacing((2.0, 2.0, 2.0)))
    assert main([*args, "--out", str(tmp_path / "scores")]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("error: ") for line in lines), captured.err
    assert str(tmp_path / "ref" / "a.nii.gz") in lines[0] and "labels outside" in lines[0]
    assert str(tmp_path / "pred" / "c.nii.gz") in lines[1] and "spacing" in lines[1]
    assert not (tmp_path / "scores").exists() and not captured.out


def test_a_prediction_on_another_grid_is_refused(tmp_path, capsys):
    args = _pairs(tmp_path, ["a.nii.gz"])
    write_nifti(tmp_path / "pred" / "a.nii.gz", _cube(), Geometry.from_spacing((2.0, 2.0, 2.0)))
    assert main([*args, "--out", str(tmp_path / "scores")]) == 2
    line = _one_error_line(capsys)
    assert str(tmp_path / "pred" / "a.nii.gz") in line
    assert "prediction spacing (2.0, 2.0, 2.0) != reference" in line and "(1.0, 1.0, 1.0)" in line
    assert not (tmp_path / "scores").exists()

    shifted = Geometry.from_spacing((1.0, 1.0, 1.0))
    shifted.affine[:3, 3] = 5.0  # same spacing, another origin
    write_nifti(tmp_path / "pred" / "a.nii.gz", _cube(), shifted)
    assert main(args) == 2
    assert "affine" in _one_error_line(capsys)


def test_float_noise_in_the_spacing_is_accepted(tmp_path):
    args = _pairs(tmp_path, ["a.nii.gz"])
    noisy = Geometry.from_spacing((1.0004, 1.0, 0.9997))
    write_nifti(tmp_path / "pred" / "a.nii.gz", _cube(), noisy)
    assert main(args) == 0


@pytest.mark.parametrize("out", ["taken", "taken/scores"])
def test_out_on_a_file_is_refused_before_any_work(tmp_path, capsys, out):
    args = _pairs(tmp_path, ["a.nii.gz"])
    (tmp_path / "taken").write_text("keep")
    assert main([*args, "--out", str(tmp_path / out)]) == 2
    assert f"--out {tmp_path / out}" in _one_error_line(capsys)
    assert (tmp_path / "taken").read_text() == "keep"


@pytest.mark.parametrize("run", ["missing", "plain"])
def test_decide_postprocessing_needs_an_existing_run_dir(tmp_path, capsys, run):
    args = _pairs(tmp_path, ["a.nii.gz"])
    (tmp_path / "plain").mkdir()
    assert main([*args, "--decide-postprocessing", str(tmp_path / run)]) == 2
    assert f"--decide-postprocessing {tmp_path / run}" in _one_error_line(capsys)
    assert not (tmp_path / "missing").exists()
    assert not (tmp_path / "plain" / "postprocessing.json").exists()


def test_decide_postprocessing_refuses_post_processed_or_trained_on_cases(tmp_path, capsys):
    """A folder predicted with largest_component=[1, 2] (predict's default once a run has a
    decision) replaced the run's [1, 2] by []: removal gains nothing on masks it already made.
    Cases the run trained on decided it too. Both are refused; the decision stays."""
    args = _pairs(tmp_path, ["a.nii.gz", "b.nii.gz"])
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("data:\n  fold: 0\n")
    (run / "splits.json").write_text(json.dumps([{"train": ["b"], "val": ["a"]}]))
    (run / "postprocessing.json").write_text('{"largest_component": [1, 2]}')
    summary = {"cases": [], "failed": [], "settings": {"largest_component": [1, 2]}}
    (tmp_path / "pred" / "summary.json").write_text(json.dumps(summary))
    assert main([*args, "--decide-postprocessing", str(run)]) == 2
    assert "predicted with largest_component=[1, 2]" in _one_error_line(capsys)
    summary["settings"]["largest_component"] = []
    (tmp_path / "pred" / "summary.json").write_text(json.dumps(summary))
    assert main([*args, "--decide-postprocessing", str(run)]) == 2
    assert "b are not in" in _one_error_line(capsys)
    assert (run / "postprocessing.json").read_text() == '{"largest_component": [1, 2]}'
    (tmp_path / "pred" / "b.nii.gz").unlink()  # the validation case alone decides
    assert main([*args, "--decide-postprocessing", str(run)]) == 0


def test_out_on_a_predictions_folder_keeps_predicts_summary(tmp_path, capsys):
    args = _pairs(tmp_path, ["a.nii.gz"])
    predicts = {"cases": [{"case": "a"}], "failed": [], "settings": {}}
    (tmp_path / "pred" / "summary.json").write_text(json.dumps(predicts))
    assert main([*args, "--out", str(tmp_path / "pred")]) == 2
    line = _one_error_line(capsys)
    assert "summary.json" in line and str(tmp_path / "pred" / "evaluation") in line
    assert json.loads((tmp_path / "pred" / "summary.json").read_text()) == predicts
    assert not (tmp_path / "pred" / "metrics.csv").exists()
    # evaluate's own summary may be replaced: a second scoring into the same folder works
    assert main([*args, "--out", str(tmp_path / "scores")]) == 0
    assert main([*args, "--out", str(tmp_path / "scores")]) == 0


def test_references_stored_as_nii_meet_predictions_stored_as_nii_gz(tmp_path, capsys):
    """predict writes case.nii.gz; a dataset whose labels are uncompressed (nnU-Net's
    ``file_ending: ".nii"``) is still scored, case by case."""
    geometry = Geometry.from_spacing((1.0, 1.0, 1.0))
    for pred, ref in [("a.nii.gz", "a.nii"), ("b.nii.gz", "b.nii.gz")]:
        write_nifti(tmp_path / "pred" / pred, _cube(), geometry)
        write_nifti(tmp_path / "ref" / ref, _cube(), geometry)
    args = [
        str(tmp_path / "pred"),
        str(tmp_path / "ref"),
        "--num-classes",
        "3",
        "--metrics",
        "dice",
    ]
    assert main(args) == 0
    assert "2 cases; 0 references without a prediction" in capsys.readouterr().out
    write_nifti(tmp_path / "ref" / "a.nii.gz", _cube(), geometry)  # a.nii and a.nii.gz
    assert main(args) == 2
    assert "two references of case 'a'" in _one_error_line(capsys)


def test_tolerance_mm_sets_the_surface_dice_tolerance(tmp_path):
    # The prediction is the reference cube moved 2 voxels (2 mm) along the first axis: every
    # surface point lies within 2 mm of the other surface, but not all within 1 mm.
    geometry = Geometry.from_spacing((1.0, 1.0, 1.0))
    ref = np.zeros((12, 10, 10), np.uint8)
    ref[2:6, 2:6, 2:6] = 1
    write_nifti(tmp_path / "ref" / "a.nii.gz", ref, geometry)
    write_nifti(tmp_path / "pred" / "a.nii.gz", np.roll(ref, 2, axis=0), geometry)
    nsd = {}
    for tolerance in ("1", "2.5"):
        out = tmp_path / f"scores{tolerance}"
        assert main([str(tmp_path / "pred"), str(tmp_path / "ref"), "--num-classes", "2",
                     "--metrics", "nsd", "--tolerance-mm", tolerance, "--out", str(out)]) == 0  # fmt: skip
        rows = list(csv.DictReader((out / "metrics.csv").open()))
        nsd[tolerance] = float(rows[0]["nsd_1"])
    assert nsd["2.5"] == pytest.approx(1.0) and nsd["1"] < 0.9


def test_a_reference_of_another_shape_names_both_files(tmp_path, capsys):
    """Either file may be the wrong one; the message named the prediction only."""
    args = _pairs(tmp_path, ["a.nii.gz"])
    write_nifti(tmp_path / "ref" / "a.nii.gz", np.zeros((8, 10, 12), np.uint8),
                Geometry.from_spacing((1.0, 1.0, 1.0)))  # fmt: skip
    assert main(args) == 2
    line = _one_error_line(capsys)
    assert line.startswith(f"error: {tmp_path / 'pred' / 'a.nii.gz'}: shape (8, 10, 10) differs")
    assert f"(8, 10, 12) of the reference {tmp_path / 'ref' / 'a.nii.gz'}" in line


def test_decide_postprocessing_refuses_predictions_of_other_checkpoints(tmp_path, capsys):
    """predict's summary.json names the checkpoints that made the masks: an ensemble's, or
    another run's, would decide this run's post-processing from masks it did not make."""
    args = _pairs(tmp_path, ["a.nii.gz"])
    run, other = tmp_path / "run", tmp_path / "other"
    for folder in (run, other):
        (folder / "checkpoints").mkdir(parents=True)
    summary = {"cases": [], "failed": [], "settings": {"largest_component": []}}

    def decide(checkpoints: list[str]) -> int:
        summary["settings"]["checkpoints"] = checkpoints
        (tmp_path / "pred" / "summary.json").write_text(json.dumps(summary))
        return main([*args, "--decide-postprocessing", str(run)])

    ensemble = [str(run / "checkpoints" / "best.pt"), str(other / "checkpoints" / "best.pt")]
    assert decide(ensemble) == 2
    line = _one_error_line(capsys)
    assert f"was predicted by an ensemble of 2 checkpoints ({ensemble[0]}, {ensemble[1]})" in line
    assert f"predict with checkpoints={run}" in line
    assert decide([ensemble[1]]) == 2
    assert f"was predicted by {ensemble[1]}, not by {run}" in _one_error_line(capsys)
    assert not (run / "postprocessing.json").exists()
    assert decide([str(run / "checkpoints" / "last.pt")]) == 0  # the run's own: decided
    assert (run / "postprocessing.json").is_file()

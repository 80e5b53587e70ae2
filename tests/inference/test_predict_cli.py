"""The predict CLI on phantom scans: geometry, ensembles, failures, interruption, inputs."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from hybrid_unet.data.errors import DataError
from hybrid_unet.data.io import read_image, write_hdf5_case
from hybrid_unet.data.io.geometry import Geometry
from hybrid_unet.data.io.nifti import write_nifti

SPACING = (2.0, 0.8, 1.1)  # (D, H, W) mm: not 1 mm, so the 1 mm plan resamples


def phantom(seed: int, shape=(14, 40, 30)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.normal(100, 10, shape).astype(np.float32)
    d, h, w = np.indices(shape)
    image[(d - 7) ** 2 + ((h - 20) / 3) ** 2 + ((w - 15) / 3) ** 2 < 25] += 80
    return image


def write_scan(path: Path, seed: int, shape=(14, 40, 30)) -> Path:
    geometry = Geometry.from_spacing(SPACING)
    geometry.affine[:3, 3] = [-12.5, 30.0, 7.25]  # an origin that is not 0
    write_nifti(path, phantom(seed, shape), geometry)
    return path


def run_predict(args: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hybrid_unet.predict", *args], cwd=Path.cwd(),
                          capture_output=True, text=True, timeout=300, **kwargs)  # fmt: skip


@pytest.fixture(scope="session")
def scans(tmp_path_factory) -> Path:
    """Three phantom NIfTIs at a non-1-mm spacing and one corrupt file."""
    folder = tmp_path_factory.mktemp("scans")
    for i in range(3):
        write_scan(folder / f"case_{i}.nii.gz", seed=i)
    (folder / "broken.nii.gz").write_bytes(b"\x1f\x8b\x08\x00 not really gzip")
    return folder


def test_ensemble_writes_masks_volumes_and_a_summary_naming_the_bad_file(
    tiny_run, tiny_run_b, scans, tmp_path
):
    out = tmp_path / "pred"
    result = run_predict([f"checkpoints=[{tiny_run},{tiny_run_b}]", f"input={scans}",
                          f"output={out}", "save_uncertainty=true", "save_probabilities=true",
                          "sliding_window.mirror_axes=[0]"], tmp_path)  # fmt: skip
    assert result.returncode == 1, result.stderr[-2000:]
    assert "broken" in result.stderr and "Traceback" not in result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert [f["case"] for f in summary["failed"]] == ["broken"]
    assert "broken.nii.gz" in summary["failed"][0]["error"]
    assert sorted(c["case"] for c in summary["cases"]) == ["case_0", "case_1", "case_2"]
    rows = {r["case"]: r for r in csv.DictReader((out / "volumes.csv").open())}
    voxel_ml = np.prod(SPACING) / 1000
    for i in range(3):
        source, pred = nib.load(scans / f"case_{i}.nii.gz"), nib.load(out / f"case_{i}.nii.gz")
        assert pred.shape == source.shape
        np.testing.assert_allclose(pred.affine, source.affine, atol=1e-5)
        entry = next(c for c in summary["cases"] if c["case"] == f"case_{i}")
        assert tuple(entry["shape_xyz"]) == pred.shape  # the order nibabel reports
        np.testing.assert_allclose(entry["spacing_xyz"], pred.header.get_zooms(), rtol=1e-6)
        mask = np.asarray(pred.dataobj)
        for c in (1, 2, 3):  # the phantom run has 4 classes
            expected = round(float((mask == c).sum()) * voxel_ml, 6)
            assert float(rows[f"case_{i}"][f"class_{c}_ml"]) == pytest.approx(expected, abs=1e-9)
        uncertainty = nib.load(out / "uncertainty" / f"case_{i}.nii.gz")
        assert uncertainty.shape == source.shape and np.asarray(uncertainty.dataobj).max() > 0
        stored = np.load(out / "probabilities" / f"case_{i}.npz")
        probs = stored["probabilities"]  # (K, x, y, z): the label NIfTI's own voxel order
        assert probs.shape == (4, *source.shape)
        np.testing.assert_allclose(stored["affine"], pred.affine, atol=1e-5)
        np.testing.assert_allclose(stored["spacing"], pred.header.get_zooms(), rtol=1e-6)
    assert not list(out.glob(".tmp-*")) and (out / ".hydra" / "config.yaml").is_file()


def test_config_errors_are_one_line_and_exit_2(tiny_run, tmp_path):
    result = run_predict([f"checkpoints={tiny_run}", f"input={tmp_path}", f"output={tmp_path}/o",
                          "+sliding_window.overlpa=0.3", "connectivity=7"], tmp_path)  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "sliding_window.overlpa" in result.stderr and "did you mean 'overlap'" in result.stderr
    assert "connectivity" in result.stderr
    assert not (tmp_path / "o").exists()  # nothing predicted: no output folder left behind
    missing = run_predict([f"checkpoints={tmp_path}/none", f"input={tmp_path}",
                           f"output={tmp_path}/o"], tmp_path)  # fmt: skip
    assert missing.returncode == 2 and "no checkpoint at" in missing.stderr
    overlap = run_predict([f"checkpoints={tiny_run}", f"input={tmp_path}", f"output={tmp_path}/o",
                           "sliding_window.overlap=1.0"], tmp_path)  # fmt: skip
    assert overlap.returncode == 2 and "'sliding_window.overlap': 1.0 is outside" in overlap.stderr


def _one_error(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.stderr
    return lines[0]


def test_an_output_path_under_a_file_is_one_error(tiny_run, tmp_path):
    scan = write_scan(tmp_path / "scan.nii.gz", seed=3)
    (tmp_path / "afile").write_text("not a folder")
    for output in ("afile", "afile/sub"):
        line = _one_error(run_predict([f"checkpoints={tiny_run}", f"input={scan}",
                                       f"output={tmp_path / output}"], tmp_path))  # fmt: skip
        assert str(tmp_path / "afile") in line and "not a folder" in line
    assert (tmp_path / "afile").read_text() == "not a folder"


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_a_cuda_device_without_cuda_is_one_error_naming_the_key(tiny_run, tmp_path):
    scan = write_scan(tmp_path / "scan.nii.gz", seed=3)
    line = _one_error(run_predict([f"checkpoints={tiny_run}", f"input={scan}",
                                   f"output={tmp_path}/o", "device=cuda"], tmp_path))  # fmt: skip
    assert "'device' is 'cuda' but CUDA is not available" in line
    assert not (tmp_path / "o").exists()


# The predict CLI with a SIGTERM that arrives while the second case's label map is written:
# after the temporary file exists, before it is renamed into place. No race with the clock.
_SIGTERM_IN_SECOND_WRITE = """
import os, signal, sys
from hybrid_unet import predict
from hybrid_unet.inference import outputs
real_write, calls = outputs.write_nifti, []
def write_then_sigterm(path, array, geometry):
    real_write(path, array, geometry)
    calls.append(path)
    if len(calls) == 2:
        os.kill(os.getpid(), signal.SIGTERM)
outputs.write_nifti = write_then_sigterm
predict.main()
"""


def test_an_interrupted_run_leaves_only_complete_files(tiny_run, tmp_path):
    folder = tmp_path / "many"
    for i in range(4):
        write_scan(folder / f"s{i:02d}.nii.gz", seed=i, shape=(30, 60, 50))
    out = tmp_path / "pred"
    result = subprocess.run([sys.executable, "-c", _SIGTERM_IN_SECOND_WRITE, f"checkpoints={tiny_run}",
                             f"input={folder}", f"output={out}"], capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 130, result.stderr[-2000:]
    assert "Interrupted" in result.stderr and "Traceback" not in result.stderr
    written = sorted(out.glob("s*.nii.gz"))
    assert [p.name for p in written] == ["s00.nii.gz"]  # the second was cut mid-write
    assert not list(out.glob(".tmp-*"))
    assert np.asarray(nib.load(written[0]).dataobj).shape == (50, 60, 30)  # and the first is whole


def test_a_writer_failure_mid_file_leaves_no_file(tiny_run, tmp_path, monkeypatch):
    from hybrid_unet.inference import outputs
    from hybrid_unet.inference.predictor import Predictor

    def broken_write(path, array, geometry):
        Path(path).write_bytes(b"half a file")
        raise KeyboardInterrupt  # interrupted in the middle of writing

    scan = write_scan(tmp_path / "a.nii.gz", seed=0)
    monkeypatch.setattr(outputs, "write_nifti", broken_write)
    with pytest.raises(KeyboardInterrupt):
        Predictor(tiny_run, "cpu").predict_file(scan, tmp_path / "out" / "a.nii.gz")
    assert list((tmp_path / "out").iterdir()) == []


def _predict_in_process(overrides: list[str]) -> dict:
    from hydra import compose, initialize_config_module

    from hybrid_unet.predict import check_predict_config, run_prediction

    with initialize_config_module(version_base="1.3", config_module="hybrid_unet.conf"):
        cfg = compose(config_name="predict", overrides=overrides)
    return run_prediction(check_predict_config(cfg))


def test_predicting_into_the_scans_folder_or_a_labels_folder_is_refused(tiny_run, tmp_path):
    """A label map named as its scan would replace it (measured: three T1 scans of a user's
    folder became label maps); one named as a dataset's reference would replace that."""
    from hybrid_unet.config.errors import ConfigError

    scans = tmp_path / "scans"
    scan = write_scan(scans / "case_0.nii.gz", seed=0)
    before = scan.read_bytes()
    line = _one_error(run_predict([f"checkpoints={tiny_run}", f"input={scans}",
                                   f"output={scans}"], tmp_path))  # fmt: skip
    assert f"'output': {scans} is where the scans are read from (case_0.nii.gz)" in line
    assert [p.name for p in scans.iterdir()] == ["case_0.nii.gz"] and scan.read_bytes() == before
    labels = tmp_path / "labelsTr"
    labels.mkdir()
    (labels / "case_0.nii.gz").write_bytes(b"a reference")
    with pytest.raises(ConfigError, match=r"already holds case_0\.nii\.gz, which no prediction"):
        _predict_in_process([f"checkpoints={tiny_run}", f"input={scans}", f"output={labels}"])
    assert (labels / "case_0.nii.gz").read_bytes() == b"a reference"
    for _ in range(2):  # a folder a prediction wrote is predicted into again
        summary = _predict_in_process([f"checkpoints={tiny_run}", f"input={scan}",
                                       f"output={tmp_path / 'out'}"])  # fmt: skip
        assert len(summary["cases"]) == 1


def test_an_enhanced_dicom_file_is_one_scan_as_its_folder_is(tiny_run, tmp_path):
    """``input=`` one ``.dcm`` file: an enhanced multi-frame series, predicted as its folder."""
    from hybrid_unet.data.io import read_label
    from tests.data.conftest import write_enhanced_dicom

    volume = (phantom(4) * 100 + 500).astype(np.uint16)  # (D, H, W) = (14, 40, 30)
    # A sagittal series: rows along y, columns down z, slices stepping along -x (the normal).
    planes = [(volume[d], [-12.5 - SPACING[0] * d, 30.0, 7.25]) for d in range(len(volume))]
    scan = tmp_path / "series" / "IM0001.dcm"
    write_enhanced_dicom(scan, planes[::-1], spacing=SPACING, orientation=(0, 1, 0, 0, 0, -1))
    for source, out in ((scan, tmp_path / "file"), (scan.parent, tmp_path / "folder")):
        summary = _predict_in_process([f"checkpoints={tiny_run}", f"input={source}",
                                       f"output={out}"])  # fmt: skip
        assert not summary["failed"] and len(summary["cases"]) == 1
    image, geometry = read_image(scan)
    label, written = read_label(tmp_path / "file" / "IM0001.nii.gz")
    assert label.shape == image.shape[1:] == (14, 40, 30)
    np.testing.assert_allclose(written.affine, geometry.affine, atol=1e-4)
    same, _ = read_label(tmp_path / "folder" / "series.nii.gz")
    np.testing.assert_array_equal(label, same)


def test_hdf5_and_dataset_json_inputs(tiny_run, tmp_path):
    h5 = tmp_path / "cases.h5"
    for i in range(2):
        write_hdf5_case(h5, f"h{i}", phantom(i), None, SPACING)
    summary = _predict_in_process([f"checkpoints={tiny_run}", f"input={h5}", "precision=bf16",
                                   f"output={tmp_path}/h5", "class_names=[a,b,c]"])  # fmt: skip
    assert [c["case"] for c in summary["cases"]] == ["h0", "h1"] and not summary["failed"]
    label, geometry = read_image(tmp_path / "h5" / "h0.nii.gz")
    assert label.shape[1:] == (14, 40, 30) and np.allclose(geometry.spacing, SPACING)
    assert "a_ml" in (tmp_path / "h5" / "volumes.csv").read_text()

    root = tmp_path / "ds"
    write_scan(root / "imagesTs" / "t1_0000.nii.gz", seed=3)
    write_scan(root / "imagesTs" / "t2_0000.nii.gz", seed=4)
    (root / "dataset.json").write_text(json.dumps({"training": [], "labels": {}}))
    summary = _predict_in_process([f"checkpoints={tiny_run}", f"input={root}/dataset.json",
                                   f"output={tmp_path}/ds_out"])  # fmt: skip
    assert [c["case"] for c in summary["cases"]] == ["t1", "t2"]
    assert os.path.isfile(tmp_path / "ds_out" / "t1.nii.gz")


def test_numpy_inputs_a_file_or_a_folder_of_npy_and_npz(tiny_run, tmp_path):
    from hybrid_unet.data.io.numpy_io import write_npz

    folder = tmp_path / "arrays"
    folder.mkdir()
    np.save(folder / "n0.npy", phantom(0))
    (folder / "n0.json").write_text(json.dumps({"spacing": list(SPACING)}))  # the sidecar
    write_npz(folder / "n1.npz", phantom(1)[None], spacing=SPACING)
    summary = _predict_in_process([f"checkpoints={tiny_run}", f"input={folder}",
                                   f"output={tmp_path}/np"])  # fmt: skip
    assert [c["case"] for c in summary["cases"]] == ["n0", "n1"] and not summary["failed"]
    for name in ("n0", "n1"):
        label, geometry = read_image(tmp_path / "np" / f"{name}.nii.gz")
        assert label.shape[1:] == (14, 40, 30) and np.allclose(geometry.spacing, SPACING)
    summary = _predict_in_process([f"checkpoints={tiny_run}", f"input={folder}/n1.npz",
                                   f"output={tmp_path}/one"])  # fmt: skip
    assert [c["case"] for c in summary["cases"]] == ["n1"]
    # without a sidecar the 1 mm is a guess, and predict says so (it was silent)
    np.save(tmp_path / "bare.npy", phantom(2))
    with pytest.warns(UserWarning, match=r"bare\.npy: stores no voxel spacing, 1 mm assumed"):
        _predict_in_process([f"checkpoints={tiny_run}", f"input={tmp_path}/bare.npy",
                             f"output={tmp_path}/bare"])  # fmt: skip


def test_scans_that_share_a_name_are_refused_before_any_prediction(tmp_path):
    from hybrid_unet.data.errors import DataError
    from hybrid_unet.inference.inputs import find_cases

    write_scan(tmp_path / "a.nii.gz", seed=0)
    np.save(tmp_path / "a.npy", phantom(0))
    with pytest.raises(DataError, match="several scans are named a:"):
        find_cases(tmp_path)


def test_dataset_json_val_split_predicts_the_runs_validation_fold(tiny_run, tmp_path):
    fold = json.loads((tiny_run / "splits.json").read_text())[0]["val"]
    root = tmp_path / "ds"
    names = sorted([*fold, "not_in_fold"])
    for i, name in enumerate(names):
        write_scan(root / "imagesTr" / f"{name}.nii.gz", seed=i)
    training = [
        {"image": f"./imagesTr/{n}.nii.gz", "label": f"./labelsTr/{n}.nii.gz"} for n in names
    ]
    (root / "dataset.json").write_text(json.dumps({"training": training, "labels": {}}))
    summary = _predict_in_process([f"checkpoints={tiny_run}", f"input={root}/dataset.json",
                                   "split=val", f"output={tmp_path}/val"])  # fmt: skip
    assert sorted(c["case"] for c in summary["cases"]) == sorted(fold)
    # another dataset, none of the fold in it: said so (it was "no scan found")
    outside = [t for t in training if "not_in_fold" in t["image"]]
    (root / "dataset.json").write_text(json.dumps({"training": outside, "labels": {}}))
    with pytest.raises(DataError, match=r"dataset.json: lists none of the run's \d+ validation"):
        _predict_in_process([f"checkpoints={tiny_run}", f"input={root}/dataset.json",
                             "split=val", f"output={tmp_path}/val2"])  # fmt: skip


def test_auto_mirroring_follows_each_runs_validation_and_an_ensemble_shares_axes(
    tiny_run, mirrored_run
):
    """``mirror_axes="auto"`` (predict's default) mirrors as the run validated: none for the tiny
    run (no val_mirror), H and W for a run that flipped them and validated mirrored, and only
    the axes every member validated with for an ensemble."""
    from hybrid_unet.inference.predictor import Predictor
    from hybrid_unet.inference.sliding_window import SlidingWindow

    assert Predictor(tiny_run, "cpu").sliding_window.mirror_axes == []
    assert Predictor(mirrored_run, "cpu").sliding_window.mirror_axes == [1, 2]
    assert Predictor([mirrored_run, tiny_run], "cpu").sliding_window.mirror_axes == []
    explicit = Predictor(mirrored_run, "cpu", sliding_window=SlidingWindow(mirror_axes=[2]))
    assert explicit.sliding_window.mirror_axes == [2]


def test_help_names_the_inputs_and_only_predicts_own_keys(tmp_path):
    result = run_predict(["--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "input: a NIfTI file or folder" in result.stdout
    assert "mirror_axes: auto" in result.stdout
    assert "Configuration groups" not in result.stdout  # training's groups do not apply here
    assert "loss:" not in result.stdout


def test_a_warning_is_one_line_without_source_code(mirrored_run, tmp_path):
    scan = write_scan(tmp_path / "scan.nii.gz", seed=3)
    out = tmp_path / "out"
    result = run_predict([f"checkpoints={mirrored_run}", f"input={scan}", f"output={out}",
                          "sliding_window.mirror_axes=[0,1,2]"], tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "never trained with flips" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: sliding_window.mirror_axes=")
    assert "Predictor(" not in result.stderr and "UserWarning" not in result.stderr
    assert (out / "scan.nii.gz").is_file()


def test_a_scan_unlike_the_training_cases_is_named_in_one_warning():
    from hybrid_unet.data.planning import Plan
    from hybrid_unet.inference.pipeline import segment, unlike_training

    plan = Plan(spacing=[1.0, 1.0, 1.0], patch_size=[16, 16, 16], batch_size=2,
                strides=[[1, 1, 1], [2, 2, 2]], kernel_sizes=[[3, 3, 3]] * 2,
                normalization=["zscore"], intensity_properties=[{}],
                median_shape=[10.0, 12.0, 10.0])  # fmt: skip
    assert unlike_training(plan, (1.0, 1.2, 0.9), (12, 14, 10)) is None  # a training-like case
    assert unlike_training(plan, (1.0, 1.0, 1.0), (20, 24, 20)) is None  # 8x: still close
    coarse = unlike_training(plan, (1.0, 1.0, 5.0), (10, 12, 10))
    assert "5.0x coarser along one axis" in coarse and "1 x 1 x 5 mm" in coarse
    assert "4.0x finer along one axis" in unlike_training(plan, (0.25, 1.0, 1.0), (10, 12, 10))
    wide = unlike_training(plan, (1.0, 1.0, 1.0), (40, 48, 40))
    assert "64x the volume" in wide and "40 x 48 x 40 voxels against 10 x 12 x 10" in wide

    image = np.random.default_rng(0).normal(size=(1, 40, 48, 40)).astype(np.float32)
    geometry = Geometry.from_spacing((1.0, 1.0, 1.0), Path("/scans/brain.nii.gz"))

    def members(x):
        yield np.stack([np.ones(x.shape[1:], np.float32), np.zeros(x.shape[1:], np.float32)])

    with pytest.warns(UserWarning, match=r"^/scans/brain.nii.gz: unlike the training cases"):
        segment(image, geometry, plan, members)


def test_a_sagittal_scan_is_predicted_in_the_training_axis_order_and_written_in_its_own():
    """The same scan stored axial (D, H, W along z, y, x) and sagittal (along x, z, y): a
    network that looks at the position along D must see the same array both times, and each
    mask must come back on its own scan's grid. (The sagittal one was only flipped.)"""
    from hybrid_unet.data.planning import Plan
    from hybrid_unet.inference.pipeline import segment

    plan = Plan(spacing=[1.0, 1.0, 1.0], patch_size=[8, 8, 8], batch_size=2,
                strides=[[1, 1, 1]], kernel_sizes=[[3, 3, 3]], normalization=["zscore"],
                intensity_properties=[{}], canonical_directions=True,
                axis_order=[2, 1, 0])  # fmt: skip
    image = 1.0 + np.random.default_rng(0).random((1, 8, 10, 12)).astype(np.float32)
    axial = Geometry.from_spacing((1.0, 1.0, 1.0), "axial.nii.gz")
    sagittal = Geometry((1.0, 1.0, 1.0), axial.affine[:, [2, 0, 1, 3]], "sagittal.nii.gz")

    def members(x):  # class 1 in the first 3 planes along D and the first 4 along H
        fg = np.zeros(x.shape[1:], np.float32)
        fg[:3, :4] = 1.0
        yield np.stack([1.0 - fg, fg])

    a = segment(image, axial, plan, members).label
    b = segment(np.ascontiguousarray(image.transpose(0, 3, 1, 2)), sagittal, plan, members).label
    assert a.sum() == 3 * 4 * 12 and b.shape == (12, 8, 10)
    np.testing.assert_array_equal(b, a.transpose(2, 0, 1))

"""Dataset layouts and validation: every bad input is reported, naming its file."""

from __future__ import annotations

import json
import re

import h5py
import nibabel as nib
import numpy as np
import pytest

from hybrid_unet.data.errors import DataError, DatasetValidationError
from hybrid_unet.data.io import write_hdf5_case
from hybrid_unet.data.layouts import CaseRecord, detect_layout
from hybrid_unet.data.validation import collect_problems, validate_dataset


def test_decathlon_layout(decathlon):
    layout = detect_layout(decathlon)
    assert layout.kind == "decathlon"
    assert [c.name for c in layout.cases] == [f"case_{i:03d}" for i in range(4)]
    assert layout.labels == {0: "background", 1: "a", 2: "b"}
    assert layout.modality == {0: "MRI"}
    assert layout.cases[0].images == [decathlon / "imagesTr" / "case_000.nii.gz"]
    validate_dataset(layout.cases, layout.labels)


def test_decathlon_multichannel_4d(tmp_path, decathlon_writer):
    root = decathlon_writer(tmp_path / "mm", num_cases=2, channels=2)
    layout = detect_layout(root)
    assert layout.modality == {0: "MRI", 1: "MRI"}
    validate_dataset(layout.cases, layout.labels)


def test_decathlon_case_names_keep_their_inner_dots(tmp_path):
    """Uncompressed ``sub-01.ses-1.nii`` and ``sub-01.ses-2.nii`` were both named ``sub-01``
    (everything after the first dot dropped) and refused as duplicate case names."""
    root = tmp_path / "dots"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    training = []
    for name in ("sub-01.ses-1", "sub-01.ses-2"):
        for folder, dtype in (("imagesTr", np.float32), ("labelsTr", np.uint8)):
            image = nib.Nifti1Image(np.ones((4, 5, 6), dtype), np.eye(4))
            nib.save(image, str(root / folder / f"{name}.nii"))
        training.append({"image": f"./imagesTr/{name}.nii", "label": f"./labelsTr/{name}.nii"})
    (root / "dataset.json").write_text(json.dumps({"labels": {"0": "bg", "1": "fg"},
                                                   "training": training}))  # fmt: skip
    layout = detect_layout(root)
    assert [c.name for c in layout.cases] == ["sub-01.ses-1", "sub-01.ses-2"]
    validate_dataset(layout.cases, layout.labels)


def _nnunetv2_dataset(root, ending=".nii.gz", **meta):
    """Two cases of two channels each, nnU-Net v2 layout; ``meta`` overrides dataset.json."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for name in ("a", "b"):
        for c in range(2):
            nib.save(
                nib.Nifti1Image(np.ones((4, 5, 6), np.float32), np.eye(4)),
                str(root / "imagesTr" / f"{name}_{c:04d}{ending}"),
            )
        nib.save(
            nib.Nifti1Image(np.zeros((4, 5, 6), np.uint8), np.eye(4)),
            str(root / "labelsTr" / f"{name}{ending}"),
        )
    meta = {
        "channel_names": {"0": "T1", "1": "T2"},
        "labels": {"background": 0, "x": 1},
        "numTraining": 2,
        "file_ending": ending,
        **meta,
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_nnunetv2_layout(tmp_path):
    root = _nnunetv2_dataset(tmp_path / "Dataset001")
    layout = detect_layout(root)
    assert layout.kind == "nnunetv2" and [c.name for c in layout.cases] == ["a", "b"]
    assert [p.name for p in layout.cases[1].images] == ["b_0000.nii.gz", "b_0001.nii.gz"]
    assert layout.labels == {0: "background", 1: "x"} and layout.modality == {0: "T1", 1: "T2"}
    validate_dataset(layout.cases, layout.labels)


def test_nnunetv2_ignore_label_is_kept_apart_from_the_classes(tmp_path):
    """It was refused; now its voxels are left out of the loss and the metrics."""
    root = _nnunetv2_dataset(tmp_path / "Dataset005", labels={"background": 0, "x": 1, "ignore": 2})
    layout = detect_layout(root)
    assert layout.labels == {0: "background", 1: "x"} and layout.ignore_label == 2


def test_nnunetv2_layout_with_uncompressed_nifti(tmp_path):
    layout = detect_layout(_nnunetv2_dataset(tmp_path / "Dataset002", ending=".nii"))
    assert [p.name for p in layout.cases[0].images] == ["a_0000.nii", "a_0001.nii"]
    validate_dataset(layout.cases, layout.labels)


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ({"numTraining": "2"}, "numTraining must be an integer, got '2'"),
        ({"numTraining": 3}, "numTraining=3, found 2 label file(s) ending in '.nii.gz'"),
        ({"file_ending": ".mha"}, "file_ending '.mha' is not a format this project reads"),
        ({"labels": {"background": "0", "x": "1"}}, "label 'background' must be an integer"),
        (
            {"labels": {"background": 0, "whole": [1, 2], "core": 2}},
            "label 'whole' is a region [1, 2] (a list of values): region-based training is not",
        ),
        (
            {"labels": {"background": 0, "ignore": 1, "x": 2}},
            "label 'ignore' = 1 must be above every class value (the highest is 2)",
        ),
    ],
)
def test_nnunetv2_features_we_do_not_read_are_refused_naming_the_file(tmp_path, meta, message):
    """Was: numTraining "2" said 'numTraining=2, found 2'; file_ending .mha said 'found 0'
    (or failed every file); string values were called region labels; an 'ignore' label below
    a class value (nnU-Net's rule: it is the highest) is refused."""
    root = _nnunetv2_dataset(tmp_path / "Dataset003", **meta)
    with pytest.raises(DataError, match=re.escape(message)) as err:
        detect_layout(root)
    assert str(root) in str(err.value) and "\n" not in str(err.value)


def test_nnunetv2_explicit_dataset_mapping_is_what_trains(tmp_path):
    """nnU-Net v2's 'dataset' key (each case's files listed) was ignored: every label in
    labelsTr was trained on, whatever the mapping said."""
    root = _nnunetv2_dataset(tmp_path / "Dataset004")
    listing = {"b": {"images": ["imagesTr/b_0000.nii.gz", "imagesTr/b_0001.nii.gz"],
                     "label": "labelsTr/b.nii.gz"}}  # fmt: skip
    meta = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**meta, "dataset": listing, "numTraining": 1}))
    layout = detect_layout(root)
    assert [(c.name, c.images, c.label) for c in layout.cases] == [
        ("b", [root / "imagesTr" / "b_0000.nii.gz", root / "imagesTr" / "b_0001.nii.gz"],
         root / "labelsTr" / "b.nii.gz")
    ]  # fmt: skip
    validate_dataset(layout.cases, layout.labels)
    listing["b"]["label"] = "../../etc/passwd"
    (root / "dataset.json").write_text(json.dumps({**meta, "dataset": listing, "numTraining": 1}))
    with pytest.raises(DataError, match=re.escape("dataset['b'].label '../../etc/passwd' points")):
        detect_layout(root)


def test_a_numpy_label_without_sidecar_lies_on_its_images_grid(tmp_path):
    """A .npy label map stores no spacing: it was taken as 1 mm and refused against its image's
    2 mm sidecar ('label spacing (1.0, 1.0, 1.0) != image spacing (2.0, 1.0, 1.0)')."""
    np.save(tmp_path / "img.npy", np.ones((4, 5, 6), np.float32))
    (tmp_path / "img.json").write_text(json.dumps({"spacing": [2.0, 1.0, 1.0]}))
    np.save(tmp_path / "lab.npy", np.zeros((4, 5, 6), np.uint8))
    record = CaseRecord("a", [tmp_path / "img.npy"], tmp_path / "lab.npy")
    assert collect_problems([record], [0, 1]) == []
    np.save(tmp_path / "lab.npy", np.zeros((4, 5, 7), np.uint8))  # the shape is still checked
    assert collect_problems([record], [0, 1]) == [
        f"{tmp_path / 'lab.npy'}: label shape (4, 5, 7) != image shape (4, 5, 6)"
        " (D, H, W order: a NIfTI's z, y, x)"
    ]
    np.save(tmp_path / "lab.npy", np.zeros((4, 5, 6), np.uint8))  # a sidecar that disagrees
    (tmp_path / "lab.json").write_text(json.dumps({"spacing": [1.0, 1.0, 1.0]}))
    assert "label spacing (1.0, 1.0, 1.0) != image spacing" in collect_problems([record], [0, 1])[0]


def test_hdf5_layout(tmp_path):
    path = tmp_path / "cases.h5"
    for name in ("p1", "p2"):
        write_hdf5_case(
            path,
            name,
            np.ones((3, 4, 5), np.float32),
            np.zeros((3, 4, 5), np.uint8),
            (2.0, 1.0, 1.0),
        )
    with h5py.File(path, "a") as f:
        f.attrs["labels"] = json.dumps({"0": "bg", "1": "fg"})
    layout = detect_layout(path)
    assert layout.kind == "hdf5" and [c.key for c in layout.cases] == ["p1", "p2"]
    validate_dataset(layout.cases, layout.labels)


def test_unknown_layout_and_missing_root(tmp_path):
    (tmp_path / "dataset.json").write_text("{}")
    with pytest.raises(DataError, match="no known layout"):
        detect_layout(tmp_path)
    with pytest.raises(DataError, match=r"nowhere.*not found"):
        detect_layout(tmp_path / "nowhere")


def _break(root, case, how):
    img = root / "imagesTr" / f"{case}.nii.gz"
    lab = root / "labelsTr" / f"{case}.nii.gz"
    shape = (10, 12, 8)
    if how == "shape":
        nib.save(nib.Nifti1Image(np.zeros((10, 12, 9), np.uint8), np.eye(4)), str(lab))
    elif how == "spacing":
        nib.save(nib.Nifti1Image(np.zeros(shape, np.uint8), np.diag([1, 1, 2.0, 1])), str(lab))
    elif how == "affine":
        affine = np.eye(4)
        affine[:3, 3] = [5, 0, 0]
        nib.save(nib.Nifti1Image(np.zeros(shape, np.uint8), affine), str(lab))
    elif how == "label_value":
        nib.save(nib.Nifti1Image(np.full(shape, 7, np.uint8), np.eye(4)), str(lab))
    elif how == "nan":
        data = np.ones(shape, np.float32)
        data[0, 0, 0] = np.nan
        nib.save(nib.Nifti1Image(data, np.eye(4)), str(img))
    elif how == "empty":
        img.write_bytes(b"")
    elif how == "truncated":
        img.write_bytes(img.read_bytes()[:200])
    elif how == "missing":
        lab.unlink()
    return lab if how in ("shape", "spacing", "affine", "label_value", "missing") else img


PROBLEMS = {
    "shape": "label shape",
    "spacing": "spacing",
    "affine": "affine differs",
    "label_value": r"label values \[7\] are not declared",
    "nan": "NaN or Inf",
    "empty": "cannot read NIfTI",
    "truncated": "cannot read NIfTI",
    "missing": "missing",
}


@pytest.mark.parametrize("how", sorted(PROBLEMS))
def test_each_problem_names_its_file(decathlon, how):
    bad = _break(decathlon, "case_001", how)
    layout = detect_layout(decathlon)
    with pytest.raises(DatasetValidationError) as info:
        validate_dataset(layout.cases, layout.labels, root=decathlon)
    assert len(info.value.problems) == 1
    line = info.value.problems[0]
    assert str(bad) in line
    assert re.search(PROBLEMS[how], line), line


def test_all_problems_are_collected_in_one_error(decathlon_writer, tmp_path):
    root = decathlon_writer(tmp_path / "many", num_cases=4)
    _break(root, "case_000", "nan")
    _break(root, "case_001", "missing")
    _break(root, "case_002", "label_value")
    _break(root, "case_003", "truncated")
    layout = detect_layout(root)
    with pytest.raises(DatasetValidationError) as info:
        validate_dataset(layout.cases, layout.labels, num_workers=2, root=root)
    message = str(info.value)
    assert message.startswith(f"{root}: dataset has 4 problem(s):")
    for i in range(4):
        assert f"case_{i:03d}.nii.gz" in message
    assert len(message.splitlines()) == 5


def test_dicom_gap_is_a_validation_problem(tmp_path, dicom_writer):
    folder = tmp_path / "series"
    dicom_writer(folder, np.zeros((4, 3, 3), np.uint16), positions=[0, 1, 2, 5])
    problems = collect_problems([CaseRecord("s", [folder], None)], None)
    assert len(problems) == 1 and str(folder) in problems[0] and "gap" in problems[0]


def test_check_dataset_script(decathlon, capsys):
    from scripts.check_dataset import main

    assert main([str(decathlon), "--workers", "0"]) == 0
    assert "patch size" in capsys.readouterr().out
    _break(decathlon, "case_002", "label_value")
    assert main([str(decathlon), "--workers", "0"]) == 1
    out = capsys.readouterr().out
    assert "1 problem(s)" in out and "case_002.nii.gz" in out
    assert main([str(decathlon / "nope")]) == 2

"""The ONNX runner's command line: a wrong model file or output folder is one ``error:`` line."""

from __future__ import annotations

import pytest

pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("model", ["missing.onnx", "model.ts", "model.onnx"])
def test_a_model_onnx_runtime_cannot_load_is_one_error(model, tmp_path, capsys):
    """A missing file, the TorchScript twin export writes, or a broken ``.onnx``: before, an
    onnxruntime traceback (NoSuchFile, InvalidProtobuf)."""
    from hybrid_unet.inference.onnx_runner import main

    (tmp_path / "model.ts").write_bytes(b"PK\x03\x04 not an onnx protobuf")
    (tmp_path / "model.onnx").write_bytes(b"\x00\x01 truncated")
    (tmp_path / "scan.nii.gz").write_bytes(b"")
    code = main([str(tmp_path / model), str(tmp_path / "scan.nii.gz"), str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: {tmp_path / model}") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_an_output_that_is_a_file_is_one_error(tmp_path, capsys):
    from hybrid_unet.inference.onnx_runner import main

    taken = tmp_path / "pred.nii.gz"
    taken.write_bytes(b"")
    code = main([str(tmp_path / "model.onnx"), str(tmp_path), str(taken)])
    err = capsys.readouterr().err
    assert code == 2 and err == f"error: output {taken} is a file, not a folder\n"


def test_an_output_that_is_the_scans_folder_or_a_labels_folder_is_one_error(tmp_path, capsys):
    """The scans' own folder as output: before, exit 0 and every scan replaced by its label
    map (predict refused it). A folder of references named as the maps is refused too."""
    from hybrid_unet.inference.onnx_runner import main

    scans, labels = tmp_path / "imagesTs", tmp_path / "labelsTr"
    for folder in (scans, labels):
        folder.mkdir()
        (folder / "case_0.nii.gz").write_bytes(b"a scan")
    model = str(tmp_path / "model.onnx")  # never loaded: the output is refused first
    assert main([model, str(scans), str(scans)]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: output: {scans} is where the scans are read from (case_0.nii.gz); "
                   "predict into another folder\n")  # fmt: skip
    assert main([model, str(scans / "case_0.nii.gz"), str(scans)]) == 2
    assert "is where the scans are read from" in capsys.readouterr().err
    assert main([model, str(scans), str(labels)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: output: {labels} already holds case_0.nii.gz")
    assert err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["case_0.nii.gz"] * 2 + [
        "imagesTs",
        "labelsTr",
    ]
    assert (scans / "case_0.nii.gz").read_bytes() == b"a scan"

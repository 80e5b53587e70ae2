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

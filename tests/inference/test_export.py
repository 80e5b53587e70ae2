"""Export: ONNX parity on an unseen size, TorchScript, and the torch-free runner vs PyTorch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from tests.inference.test_predict_cli import write_scan

pytest.importorskip("onnxruntime", reason="needs the export extra")


@pytest.fixture(scope="session")
def exported(tiny_run, tmp_path_factory) -> Path:
    from hybrid_unet.export import main

    out = tmp_path_factory.mktemp("export")
    assert main([str(tiny_run), str(out), "--mirror", "--class-names", "a,b,c"]) == 0
    return out


def test_onnx_matches_pytorch_on_a_size_not_seen_at_export(tiny_run, exported):
    from hybrid_unet.export import onnx_max_abs_diff, unseen_shape
    from hybrid_unet.inference.predictor import Predictor

    predictor = Predictor(tiny_run, "cpu")
    shape = unseen_shape(predictor)
    assert shape[0] != 1 and shape[2:] != predictor.patch_size
    diff = onnx_max_abs_diff(predictor, exported / "model.onnx", (3, 1, 24, 40, 56))
    assert diff <= 1e-4
    assert onnx_max_abs_diff(predictor, exported / "model.onnx", shape) <= 1e-4


def test_torchscript_carries_the_plan_and_matches(tiny_run, exported):
    from hybrid_unet.inference.predictor import Predictor

    extra = {"hybrid_unet": ""}
    scripted = torch.jit.load(str(exported / "model.ts"), _extra_files=extra)
    meta = json.loads(extra["hybrid_unet"])
    assert meta["plan"]["spacing"] == [1.0, 1.0, 1.0] and meta["class_names"]["3"] == "c"
    x = torch.randn(2, 1, 48, 32, 16)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), Predictor(tiny_run, "cpu").models[0](x))


def test_runner_reproduces_the_pytorch_predictor(tiny_run, exported, tmp_path):
    from hybrid_unet.data.io import read_image
    from hybrid_unet.inference.onnx_runner import OnnxPredictor
    from hybrid_unet.inference.predictor import Predictor
    from hybrid_unet.inference.sliding_window import SlidingWindow

    runner = OnnxPredictor(exported / "model.onnx")
    assert runner.sliding_window.mirror_axes == [0, 1, 2] and runner.plan.spacing == [1, 1, 1]
    predictor = Predictor(tiny_run, "cpu", sliding_window=SlidingWindow(mirror_axes=[0, 1, 2]))
    image, geometry = read_image(write_scan(tmp_path / "s.nii.gz", seed=5))
    ours, theirs = predictor.segment(image, geometry, True), runner.segment(image, geometry)
    x = np.random.default_rng(0).standard_normal((1, 20, 36, 28)).astype(np.float32)
    np.testing.assert_allclose(next(runner.members(x)), next(predictor.members(x)), atol=1e-5)
    assert theirs.label.shape == ours.label.shape == image.shape[1:]
    assert (theirs.label == ours.label).mean() > 0.999

    # The same through the runner's CLI in a process where torch and monai cannot be imported.
    code = ("import sys; sys.modules['torch'] = None; sys.modules['monai'] = None\n"
            "from hybrid_unet.inference.onnx_runner import main\n"
            f"sys.exit(main([{str(exported / 'model.onnx')!r}, {str(tmp_path / 's.nii.gz')!r},"
            f" {str(tmp_path / 'out')!r}]))")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, cwd=Path.cwd())  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    written = nib.load(tmp_path / "out" / "s.nii.gz")
    assert (np.asarray(written.dataobj).transpose(2, 1, 0) == theirs.label).all()
    np.testing.assert_allclose(written.affine, nib.load(tmp_path / "s.nii.gz").affine)
    assert "a_ml" in (tmp_path / "out" / "volumes.csv").read_text()


def test_mirroring_axes_the_run_never_flipped_warns(tiny_run):
    """The tiny run trains on phantoms without augmentation: mirroring its windows warns."""
    import warnings

    from hybrid_unet.inference.predictor import Predictor
    from hybrid_unet.inference.sliding_window import SlidingWindow

    with pytest.warns(UserWarning, match=r"never trained with flips along axes \[0, 2\]"):
        Predictor(tiny_run, "cpu", sliding_window=SlidingWindow(mirror_axes=[0, 2]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Predictor(tiny_run, "cpu", sliding_window=SlidingWindow(mirror_axes=[]))


def test_export_mirrors_the_runner_as_the_run_validated(mirrored_run, tmp_path):
    from hybrid_unet.export import main
    from hybrid_unet.inference.onnx_runner import OnnxPredictor

    assert main([str(mirrored_run), str(tmp_path / "auto")]) == 0
    assert OnnxPredictor(tmp_path / "auto" / "model.onnx").sliding_window.mirror_axes == [1, 2]
    assert main([str(mirrored_run), str(tmp_path / "none"), "--mirror-axes", "none"]) == 0
    assert OnnxPredictor(tmp_path / "none" / "model.onnx").sliding_window.mirror_axes == []


def test_a_truncated_checkpoint_or_a_file_as_output_is_one_error(tiny_run, tmp_path, capsys):
    from hybrid_unet.export import main

    broken = tmp_path / "run" / "checkpoints" / "best.pt"
    broken.parent.mkdir(parents=True)
    broken.write_bytes((tiny_run / "checkpoints" / "best.pt").read_bytes()[:5000])
    assert main([str(tmp_path / "run"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith(f"error: {broken}: not a readable PyTorch checkpoint")
        and err.count("\n") == 1
    )
    assert not (tmp_path / "out").exists()
    (tmp_path / "afile").write_text("")
    assert main([str(tiny_run), str(tmp_path / "afile")]) == 2
    assert (
        capsys.readouterr().err == f"error: output {tmp_path / 'afile'} is a file, not a folder\n"
    )


def _fail_to_run(*args, **kwargs):
    raise RuntimeError("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Non-zero status code\n"
                       "returned while running Add node. Name:'/attn/Add_3'")  # fmt: skip


@pytest.mark.parametrize("outcome", ["crash", "mismatch"])
def test_a_failed_parity_check_is_one_error_and_writes_nothing(
    tiny_run, tmp_path, capsys, monkeypatch, outcome
):
    import hybrid_unet.export as export

    if outcome == "crash":  # e.g. SwinUNETR without pad_input: its window mask is fixed at export
        monkeypatch.setattr(export, "onnx_parity", _fail_to_run)
    else:
        monkeypatch.setattr(export, "onnx_parity", lambda *a: (0.5, 3.0))
    out = tmp_path / "out"

    assert export.main([str(tiny_run), str(out)]) == 1

    err = capsys.readouterr().err
    assert err.startswith(f"error: {tiny_run}: ") and err.count("\n") == 1, err
    assert ("INVALID_ARGUMENT" if outcome == "crash" else "exceeds 0.0003") in err
    assert not out.exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    assert export.main([str(tiny_run), str(existing)]) == 1
    assert list(existing.iterdir()) == []


def test_the_parity_tolerance_scales_with_the_logits(tiny_run, tmp_path, capsys, monkeypatch):
    """Float noise of 3e-4 on logits near 10 (SwinUNETR) passes; the same on logits below 1
    does not."""
    import hybrid_unet.export as export

    monkeypatch.setattr(export, "onnx_parity", lambda *a: (3e-4, 10.0))
    assert export.main([str(tiny_run), str(tmp_path / "large")]) == 0
    assert "allowed 0.001" in capsys.readouterr().out
    assert {p.name for p in (tmp_path / "large").iterdir()} == {"model.onnx", "model.ts"}
    monkeypatch.setattr(export, "onnx_parity", lambda *a: (3e-4, 0.5))
    assert export.main([str(tiny_run), str(tmp_path / "small")]) == 1
    assert "exceeds 0.0001" in capsys.readouterr().err


def test_runner_predicts_a_dataset_json_split(exported, tmp_path, capsys):
    """A Decathlon dataset.json without a test list could not be given to the runner (predict
    has split=); --split training picks its cases, and the run ends with predict's Done line."""
    from hybrid_unet.inference.onnx_runner import main

    (tmp_path / "imagesTr").mkdir()
    write_scan(tmp_path / "imagesTr" / "c1.nii.gz", seed=1, shape=(10, 20, 16))
    (tmp_path / "dataset.json").write_text(json.dumps(
        {"labels": {"0": "bg", "1": "a"}, "modality": {"0": "MRI"},
         "training": [{"image": "./imagesTr/c1.nii.gz", "label": "./labelsTr/c1.nii.gz"}]}
    ))  # fmt: skip
    model, listing, out = (
        str(exported / "model.onnx"),
        str(tmp_path / "dataset.json"),
        tmp_path / "o",
    )
    assert main([model, listing, str(out)]) == 2
    assert "no 'test' list" in capsys.readouterr().err
    assert main([model, listing, str(out), "--split", "training"]) == 0
    assert (out / "c1.nii.gz").is_file()
    assert f"Done: 1 case(s) written to {out}; 0 failed." in capsys.readouterr().out


def test_export_raises_no_alarming_warning(tiny_run, tmp_path):
    """The legacy-exporter notice and "instance_norm is set to train=True" reached the user as
    two warning lines about a deliberate, harmless choice."""
    import warnings

    from hybrid_unet.export import export_metadata, export_onnx
    from hybrid_unet.inference.predictor import Predictor

    predictor = Predictor(tiny_run, "cpu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_onnx(predictor, tmp_path / "m.onnx", export_metadata(predictor, {}))
    alarming = ("legacy TorchScript-based ONNX export", "'instance_norm' is set to train=True")
    assert [str(w.message) for w in caught if any(a in str(w.message) for a in alarming)] == []


def test_a_run_whose_model_class_does_not_import_here_says_so(tiny_run, tmp_path):
    """A run trained with a model of one's own (PYTHONPATH=. in training) predicted elsewhere:
    Hydra's "Error locating target 'my_models.TinyNet'" said nothing of where to look."""
    from hybrid_unet.config.errors import ConfigError
    from hybrid_unet.engine.checkpoint import atomic_save, load_checkpoint
    from hybrid_unet.inference.predictor import Predictor

    ckpt = load_checkpoint(tiny_run / "checkpoints" / "best.pt")
    ckpt["config"]["model"]["_target_"] = "my_models_not_here.TinyNet"
    path = atomic_save(ckpt, tmp_path / "run" / "checkpoints" / "best.pt")
    with pytest.raises(
        ConfigError,
        match=r"model._target_ 'my_models_not_here.TinyNet' cannot "
        r"be imported here; predict where the run trained",
    ):
        Predictor(path, "cpu")

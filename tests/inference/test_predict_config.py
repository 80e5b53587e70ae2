"""predict's start-up refusals: a bad value is one ``error:`` line naming its key, exit code 2,
and nothing written. Before, these ended in a traceback (exit 1), failed every case, or were
accepted and silently did something else."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.inference.conftest import make_run
from tests.inference.test_predict_cli import (
    _one_error,
    _predict_in_process,
    run_predict,
    write_scan,
)


@pytest.fixture(scope="module")
def scan(tmp_path_factory) -> Path:
    return write_scan(tmp_path_factory.mktemp("scan") / "case_0.nii.gz", seed=0)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("mc_dropout_samples=-1", "config key 'mc_dropout_samples': -1 is outside [0, inf)"),
        ("checkpoints=[]", "config key 'checkpoints': no checkpoint given"),
        ("num_threads=-1", "config key 'num_threads': -1 is outside [1, inf)"),
        ("num_threads=0", "config key 'num_threads': 0 is outside [1, inf)"),
        ("sliding_window.patch_size=[8,8]", "config key 'sliding_window.patch_size': [8, 8] is"),
        ("sliding_window.patch_size=[8,0,8]", "config key 'sliding_window.patch_size': [8, 0, 8]"),
        # the tiny run has 4 classes: 1..3 are its foreground (7 was "kept for classes [7]")
        (
            "largest_component=[7]",
            "'largest_component': class(es) [7] outside the run's foreground classes 1..3",
        ),
        ("largest_component=[0,1]", "'largest_component': class(es) [0] outside"),
    ],
)
def test_a_bad_value_is_one_error_naming_its_key(tiny_run, scan, tmp_path, override, message):
    line = _one_error(run_predict([f"checkpoints={tiny_run}", f"input={scan}",
                                   f"output={tmp_path}/o", override], tmp_path))  # fmt: skip
    assert message in line
    assert not (tmp_path / "o").exists()


def test_mc_dropout_on_a_network_without_dropout_is_one_error(scan, tmp_path):
    """Known only once the network is built (it was a ValueError traceback)."""
    run = tmp_path / "no_dropout"
    make_run(run, overrides=["model.dropout=0"])
    line = _one_error(run_predict([f"checkpoints={run}", f"input={scan}", f"output={tmp_path}/o",
                                   "mc_dropout_samples=2"], tmp_path))  # fmt: skip
    assert "config key 'mc_dropout_samples': 2 but the network has no dropout layer" in line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model=plain_unet", "group 'model': the model comes from the run's checkpoint"),
        ("+model=plain_unet", "group 'model': the model comes from the run's checkpoint"),
        ("loss=dice_ce", "group 'loss': the training settings come from the run's checkpoint"),
    ],
)
def test_a_training_config_group_is_one_error(tiny_run, scan, tmp_path, override, message):
    """Hydra said "Could not override 'model' ... use +model=plain_unet", which failed too."""
    line = _one_error(run_predict([f"checkpoints={tiny_run}", f"input={scan}",
                                   f"output={tmp_path}/o", override], tmp_path))  # fmt: skip
    assert line.startswith("error: predict takes no config group") and message in line
    assert not (tmp_path / "o").exists()


def test_a_missing_or_empty_output_is_one_error_naming_it(tiny_run, scan, tmp_path):
    """No ``output=`` was reported as 'hydra.run.dir'; an empty one predicted into the working
    directory."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    for extra, message in (([], "config key 'output': Missing mandatory value: output"),
                           (["output="], "config key 'output' is empty")):  # fmt: skip
        result = subprocess.run([sys.executable, "-m", "hybrid_unet.predict",
                                 f"checkpoints={tiny_run}", f"input={scan}", *extra], cwd=cwd,
                                capture_output=True, text=True, timeout=300)  # fmt: skip
        assert message in _one_error(result)
        assert not list(cwd.iterdir())


def test_split_val_refuses_an_ensemble_of_runs_of_other_folds(tiny_run, tiny_run_b, tmp_path):
    """The first run's fold was used: the other run had trained on those "validation" cases."""
    from hybrid_unet.config.errors import ConfigError
    from hybrid_unet.inference.predictor import Predictor
    from hybrid_unet.predict import validation_names

    other_fold = tmp_path / "fold1"
    make_run(other_fold, seed=1, overrides=["data.fold=1"])
    root = tmp_path / "ds"
    names = sorted({n for fold in json.loads((tiny_run / "splits.json").read_text())
                    for n in fold["val"]})  # fmt: skip
    for i, name in enumerate(names):
        write_scan(root / "imagesTr" / f"{name}.nii.gz", seed=i, shape=(8, 12, 10))
    training = [{"image": f"./imagesTr/{n}.nii.gz", "label": f"./labelsTr/{n}.nii.gz"}
                for n in names]  # fmt: skip
    (root / "dataset.json").write_text(json.dumps({"training": training, "labels": {}}))
    with pytest.raises(ConfigError, match=r"config key 'split': 'val' with runs that validated"
                                          r" on different cases, .*fold 0\) and .*fold 1\)"):  # fmt: skip
        _predict_in_process([f"checkpoints=[{tiny_run},{other_fold}]", "split=val",
                             f"input={root}/dataset.json", f"output={tmp_path}/val"])  # fmt: skip
    assert not (tmp_path / "val").exists()
    fold0 = json.loads((tiny_run / "splits.json").read_text())[0]["val"]
    assert validation_names(Predictor([tiny_run, tiny_run_b], "cpu")) == fold0  # one fold: fine

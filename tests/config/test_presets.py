"""Every preset composes with further overrides and says what its name promises."""

from __future__ import annotations

import pytest

from hybrid_unet.config.validate import check_config
from tests.helpers import REPO, compose_config, run_train

PRESETS = sorted(p.stem for p in (REPO / "conf" / "preset").glob("*.yaml"))


def test_the_three_presets_exist():
    assert {"quick_test", "production", "fine_tuning"} <= set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_composes_and_passes_checks(preset, tmp_path):
    overrides = [f"+preset={preset}", "trainer.max_epochs=7", f"paths.output_dir={tmp_path}"]
    if preset == "fine_tuning":
        overrides.append("trainer.pretrained=some/checkpoint.pt")
    cfg = compose_config(overrides)
    assert cfg.trainer.max_epochs == 7  # the command line beats the preset
    resolved = check_config(cfg)
    assert resolved["model"]["in_channels"] == resolved["data"]["in_channels"]


def test_presets_differ_as_their_names_promise():
    quick = compose_config(["+preset=quick_test"])
    prod = compose_config(["+preset=production"])
    tune = compose_config(["+preset=fine_tuning"])
    assert prod.trainer.max_epochs * prod.trainer.steps_per_epoch > (
        10 * quick.trainer.max_epochs * quick.trainer.steps_per_epoch
    )
    assert min(prod.model.features) > min(quick.model.features)
    assert tune.optimizer.lr < prod.optimizer.lr
    assert "pretrained" in tune.trainer and quick.trainer.pretrained is None


def test_every_group_option_composes(tmp_path):
    for group in ("data", "model", "loss", "optimizer", "scheduler", "logger"):
        for option in sorted((REPO / "conf" / group).glob("*.yaml")):
            compose_config([f"{group}={option.stem}", "+preset=quick_test"])


@pytest.mark.parametrize("preset", ["production", "fine_tuning"])
def test_cfg_job_prints_preset(preset, tmp_path):
    result = run_train([f"+preset={preset}", "--cfg", "job"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "max_epochs" in result.stdout


@pytest.mark.parametrize(
    "experiment", sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))
)
def test_experiment_composes_and_passes_checks(experiment, tmp_path):
    cfg = compose_config([f"+experiment={experiment}", f"paths.output_dir={tmp_path}"])
    resolved = check_config(cfg)
    assert resolved["trainer"]["max_time_minutes"] is not None

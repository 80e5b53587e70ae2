"""Mistakes that used to surface only after training started (at the first step or the first
validation, as a traceback) are refused by the start-up checks with one line naming the key."""

from __future__ import annotations

import pytest

from hybrid_unet.config.errors import ConfigError
from hybrid_unet.config.validate import check_config
from tests.helpers import TINY, compose_config


def problems(overrides: list[str], tmp_path) -> list[str]:
    """The start-up problems of ``TINY`` plus ``overrides`` (empty when it passes)."""
    cfg = compose_config([*TINY, *overrides, f"paths.output_dir={tmp_path}"])
    try:
        check_config(cfg)
    except ConfigError as exc:
        return exc.problems
    return []


@pytest.mark.parametrize(
    ("override", "suggestion"),
    [
        ("trainer.checkpoint.monitor=val_dice", "mean_dice"),
        ("trainer.checkpoint.monitor=mean_dicee", "mean_dice"),
        ("trainer.checkpoint.monitor=dice_4", None),  # 4 classes: 0 (background) to 3
    ],
)
def test_a_misspelt_checkpoint_monitor_is_refused_at_start_up(override, suggestion, tmp_path):
    found = problems([override], tmp_path)
    assert len(found) == 1 and found[0].startswith("config key 'trainer.checkpoint.monitor'")
    assert suggestion is None or f"'{suggestion}'" in found[0]


def test_a_misspelt_early_stopping_monitor_is_refused_once_early_stopping_is_on(tmp_path):
    assert problems(["trainer.early_stopping.monitor=mean_dicee"], tmp_path) == []  # off
    found = problems(
        ["trainer.early_stopping.monitor=mean_dicee", "trainer.early_stopping.patience=3"],
        tmp_path,
    )
    assert len(found) == 1 and "trainer.early_stopping.monitor" in found[0]
    assert "did you mean 'mean_dice'" in found[0]


@pytest.mark.parametrize(
    "monitor", ["mean_dice", "dice_2", "mean_iou", "recall_1", "train_loss", "loss/weight_dice"]
)
def test_logged_metrics_are_accepted_as_monitors(monitor, tmp_path):
    assert problems([f"trainer.checkpoint.monitor={monitor}"], tmp_path) == []


def test_a_metric_only_the_final_validation_computes_is_refused_when_validating_earlier(
    tmp_path,
):
    """hd95 is in final_val_metrics only: the validations before the last do not log it."""
    found = problems(["trainer.checkpoint.monitor=mean_hd95", "trainer.checkpoint.mode=min"],
                     tmp_path)  # fmt: skip
    assert len(found) == 1 and "mean_hd95" in found[0]
    only_at_end = ["trainer.checkpoint.monitor=mean_hd95", "trainer.checkpoint.mode=min",
                   "trainer.val_every=1000"]  # fmt: skip
    assert problems(only_at_end, tmp_path) == []


def test_a_patch_whose_bottleneck_is_one_voxel_is_refused_before_training(tmp_path):
    """8^3 passes the divisibility check at total stride 8, then instance norm failed at the
    first step (more than 1 spatial element needed); 16x8x8 leaves two voxels and builds."""
    from hybrid_unet.engine.build import build_model

    cfg = check_config(compose_config([*TINY, "data.patch_size=[8,8,8]",
                                       f"paths.output_dir={tmp_path}"]))  # fmt: skip
    with pytest.raises(ConfigError, match=r"config key 'data.patch_size': \[8, 8, 8\] leaves"):
        build_model(cfg)
    cfg["data"]["patch_size"] = [16, 8, 8]
    build_model(cfg)


def test_a_patch_the_configs_fixed_strides_do_not_divide_names_the_fix(tmp_path):
    """plain_unet fixes nnU-Net's strides for isotropic data; on an anisotropic plan's patch
    (12 along the 3 mm axis) the error blamed the patch, not the strides the config set."""
    from hybrid_unet.engine.build import build_model

    cfg = check_config(compose_config([*TINY, "model=plain_unet", f"paths.output_dir={tmp_path}"]))
    cfg["data"]["patch_size"] = [12, 16, 16]  # as the plan fills it, after the config check
    with pytest.raises(ConfigError, match=r"not divisible .* e.g. data.patch_size=\[8, 16, 16\], "
                       r"or model.strides=null if the model config fixes"):  # fmt: skip
        build_model(cfg)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["loss.class_weights=[1,2]"], "loss.class_weights"),
        (["loss=focal", "loss.alpha=[0.1,0.2]"], "loss.alpha"),
        (["loss=ce", "loss.weight=[1,1,1,1,1]"], "loss.weight"),
        (["loss=combined", "+loss.losses.ce.weight=[1,2,3]"], "loss.losses.ce.weight"),
    ],
)
def test_per_class_loss_lists_must_have_one_value_per_class(overrides, key, tmp_path):
    found = problems(overrides, tmp_path)  # TINY's phantoms have 4 classes
    assert len(found) == 1 and found[0].startswith(f"config key '{key}'")
    assert "data.num_classes=4" in found[0]


@pytest.mark.parametrize(
    "overrides",
    [["loss.class_weights=[1,2,2,2]"], ["loss=focal", "loss.alpha=0.25"],
     ["loss=focal", "loss.alpha=[0.1,0.3,0.3,0.3]"], ["loss=combined"]],
)  # fmt: skip
def test_per_class_loss_lists_of_the_right_length_pass(overrides, tmp_path):
    assert problems(overrides, tmp_path) == []


@pytest.mark.parametrize(
    ("override", "suggestion"), [("+foo=1", None), ("+seeds=3", "seed"), ("+trainr.x=1", "trainer")]
)
def test_an_unknown_top_level_key_is_refused(override, suggestion, tmp_path):
    key = override[1:].split("=")[0].split(".")[0]
    found = problems([override], tmp_path)
    assert len(found) == 1 and found[0].startswith(f"unknown config key '{key}'")
    assert suggestion is None or f"did you mean '{suggestion}'" in found[0]


def test_the_cli_refuses_an_unknown_top_level_key_without_a_run_dir(tmp_path):
    from tests.helpers import cli

    result = cli([*TINY, "+foo=1"], tmp_path)
    assert result.code == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: unknown config key 'foo'; top-level keys: data, model, loss, optimizer, "
        "scheduler, trainer, logger, paths, seed, run_name"
    ]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.parametrize("axes", ["[3]", "[0,-1]", "[1,2.5]"])
def test_flip_axes_outside_the_three_spatial_axes_are_refused(axes, tmp_path):
    """A 4th axis failed in MONAI at the first batch, after the loggers had started."""
    cfg = compose_config(["+experiment=hippocampus_30min", f"data.augmentation.flip_axes={axes}",
                          f"paths.output_dir={tmp_path}"])  # fmt: skip
    with pytest.raises(ConfigError) as info:
        check_config(cfg)
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith("config key 'data.augmentation.flip_axes'")


def test_a_run_dir_holding_only_start_up_files_and_the_tensorboard_folder_is_discarded(tmp_path):
    """What a run refused after its loggers started leaves: no work, so no run dir."""
    from hybrid_unet.train import _discard_if_empty

    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "tensorboard").mkdir()
    (run / "tensorboard" / "events.out.tfevents.1.host").write_bytes(b"")
    for name in ("plan.json", "splits.json", "train.log"):
        (run / name).write_text("{}")
    kept = tmp_path / "kept"
    (kept / "checkpoints").mkdir(parents=True)
    (kept / "tensorboard").mkdir()
    _discard_if_empty(run)
    _discard_if_empty(kept)
    assert not run.exists() and kept.exists()


def test_a_key_a_preset_sets_but_the_chosen_scheduler_lacks_names_the_preset(tmp_path):
    """Presets set scheduler.warmup_steps; a scheduler without it could not be combined with
    any preset, and the message did not say where the key came from."""
    step_lr = ["scheduler=plateau", "scheduler._target_=torch.optim.lr_scheduler.StepLR",
               "+scheduler.step_size=10", *(f"~scheduler.{k}" for k in (
                   "mode", "factor", "patience", "threshold", "threshold_mode", "min_lr"))]  # fmt: skip
    cfg = compose_config([*TINY, *step_lr, f"paths.output_dir={tmp_path}"])
    with pytest.raises(ConfigError) as info:
        check_config(cfg, choices={"preset": "quick_test"})
    assert info.value.problems == [
        "unknown config key 'scheduler.warmup_steps'; +preset=quick_test sets it: drop it with "
        "~scheduler.warmup_steps on the command line, or use a scheduler that takes it (README: "
        "keys presets set)"
    ]
    assert check_config(compose_config([*TINY, *step_lr, "~scheduler.warmup_steps",
                                        f"paths.output_dir={tmp_path}"]))  # fmt: skip


def test_the_cli_names_the_experiment_that_set_a_key_the_chosen_model_lacks(tmp_path):
    from tests.helpers import cli

    result = cli(["+experiment=hippocampus_6min", "model=segresnet"], tmp_path)
    assert result.code == 2 and "Traceback" not in result.stderr
    assert (
        "unknown config key 'model.features'; +experiment=hippocampus_6min sets it: drop it "
        "with ~model.features" in result.stderr
    )
    assert "~model.channels_last_3d" in result.stderr


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("trainer.max_epochs=0", "config key 'trainer.max_epochs': 0 is outside [1, inf)"),
        ("trainer.val_overlap=nan", "config key 'trainer.val_overlap': nan is outside [0.0, 0.99]"),
        ("trainer.val_overlap=1.0", "config key 'trainer.val_overlap': 1.0 is outside [0.0, 0.99]"),
        ("trainer.grad_clip=0", "config key 'trainer.grad_clip': 0.0 is outside (0.0, inf)"),
        ("trainer.ema_decay=1.0", "config key 'trainer.ema_decay': 1.0 is outside (0.0, 1.0)"),
        ("data.fold=5", "config key 'data.fold': 5 but data.num_folds=5"),
        ("trainer.checkpoint.mode=maximum",
         "config key 'trainer.checkpoint.mode': must be 'min' or 'max', got 'maximum'"),
    ],
)  # fmt: skip
def test_numbers_outside_their_range_are_refused_naming_the_key(override, expected, tmp_path):
    assert problems([override], tmp_path) == [expected]


@pytest.mark.parametrize(
    "override",
    ["trainer.val_overlap=0.0", "trainer.val_overlap=0.99", "trainer.grad_clip=null",
     "trainer.checkpoint.save_top_k=-1", "data.fold=4", "trainer.checkpoint.mode=min",
     "trainer.ema_decay=0.9999"],
)  # fmt: skip
def test_numbers_on_the_edge_of_their_range_pass(override, tmp_path):
    assert problems([override], tmp_path) == []

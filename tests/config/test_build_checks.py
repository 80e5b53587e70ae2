"""Objects built from the config (engine/build.py) refuse what the trainer cannot use with one
line naming the key, instead of failing inside the training loop."""

from __future__ import annotations

import pytest
import torch

from hybrid_unet.config.errors import ConfigError
from hybrid_unet.engine import build


def _cfg(scheduler: dict) -> dict:
    return {"scheduler": scheduler, "trainer": {"max_epochs": 2, "steps_per_epoch": 3}}


def _optimizer() -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)


def test_torchs_plain_reduce_on_plateau_is_refused_pointing_at_warmup_plateau():
    """The trainer calls warmup_step() on a plateau schedule every step: torch's own class
    failed there with an AttributeError."""
    node = {"_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau", "_partial_": True,
            "mode": "max"}  # fmt: skip
    with pytest.raises(ConfigError, match=r"config key 'scheduler._target_'.*scheduler=plateau"):
        build.build_scheduler(_cfg(node), _optimizer())


def test_the_projects_warmup_plateau_builds():
    node = {"_target_": "hybrid_unet.engine.schedules.WarmupPlateau", "_partial_": True,
            "warmup_steps": 0}  # fmt: skip
    scheduler = build.build_scheduler(_cfg(node), _optimizer())
    assert build.steps_per_validation(scheduler) and hasattr(scheduler, "warmup_step")


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "cpu0"])
def test_a_device_name_torch_cannot_parse_is_a_config_error_naming_the_key(name):
    with pytest.raises(ConfigError, match=r"^config key 'trainer.device': .* use auto, cpu"):
        build.resolve_device(name)


def test_cpu_and_auto_resolve():
    assert build.resolve_device("cpu").type == "cpu"
    assert build.resolve_device("auto").type in ("cpu", "cuda")


def _model_and_cfg(overrides: list[str], tmp_path) -> tuple[torch.nn.Module, dict]:
    from hybrid_unet.config.validate import check_config
    from tests.helpers import compose_config

    cfg = check_config(compose_config([*overrides, f"paths.output_dir={tmp_path}"]))
    return build.instantiate_model(cfg["model"]), cfg


def _checkpoint(tmp_path, overrides: list[str]) -> str:
    """A checkpoint as the trainer writes it: the weights and the resolved config."""
    model, cfg = _model_and_cfg(overrides, tmp_path)
    path = tmp_path / "pre.pt"
    torch.save({"model": model.state_dict(), "config": cfg}, path)
    return str(path)


def test_a_checkpoint_of_another_width_is_refused_naming_its_model(tmp_path, capsys):
    """quick_test's 8-64 network into the default 16-128 one: nothing matched, and the run
    trained from scratch with exit 0."""
    path = _checkpoint(tmp_path, ["+preset=quick_test"])
    model, cfg = _model_and_cfg([], tmp_path)
    with pytest.raises(ConfigError) as info:
        build.load_pretrained(model, path, cfg["model"])
    (line,) = info.value.problems
    assert line.startswith(f"config key 'trainer.pretrained': {path} is another network: 0 of")
    assert "hybrid_unet.models.hybrid_unet.HybridUNet with features [8, 16, 32, 64]" in line
    assert "model.features=[8,16,32,64]" in line and "model.depths=[1,1,1,1]" in line


def test_a_checkpoint_with_other_heads_loads_and_counts_resized_tensors_as_initialised(
    tmp_path, capsys
):
    """Fine-tuning to another class count: the heads are skipped for their shape, so they keep
    their initial values and are counted so; the report stays two lines."""
    path = _checkpoint(tmp_path, ["+preset=quick_test", "data.num_classes=3"])
    model, cfg = _model_and_cfg(["+preset=quick_test"], tmp_path)  # 4 classes
    report = build.load_pretrained(model, path, cfg["model"])
    resized = [s for s in report["skipped"] if "shape" in s]
    assert resized and report["loaded"]
    assert len(report["missing"]) == len(model.state_dict()) - len(report["loaded"])
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].endswith(
        f"{len(report['loaded'])} tensors loaded, {len(report['skipped'])} skipped, "
        f"{len(report['missing'])} left as initialised."
    )
    assert len(err) == 2 and err[1].startswith("  skipped decoder.")
    assert len(report["skipped"]) <= 3 or err[1].endswith(f"and {len(report['skipped']) - 3} more")

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

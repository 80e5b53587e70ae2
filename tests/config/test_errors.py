"""A wrong key or value ends with one readable line naming the key, and a non-zero exit."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from hybrid_unet.config.validate import target_problems
from tests.helpers import compose_config, run_train


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("trainer.max_epoch=3", "'trainer.max_epoch' (did you mean 'max_epochs'?)"),
        ("optimizer.lr=fast", "'optimizer.lr': 'fast' is not a float"),
        ("trainer.max_epochs=abc", "'trainer.max_epochs'"),
        ("+trainer.typo=1", "unknown config key 'trainer.typo'"),
        ("model=hybrid_unett", "did you mean 'hybrid_unet'"),
        ("trainer.precision=fp8", "expected one of [fp32, bf16, fp16]"),
    ],
)
def test_cli_error_is_one_line(override, expected, tmp_path):
    result = run_train(["+preset=quick_test", override], tmp_path, timeout=120)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and expected in lines[0]
    assert "Traceback" not in result.stderr
    runs = tmp_path / "runs"
    assert not runs.exists() or not any(runs.iterdir()), "a failed start left a run dir behind"


def test_patch_not_divisible_by_stride_is_caught_before_work(tmp_path):
    result = run_train(["+preset=quick_test", "data.patch_size=[40,40,41]"], tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "'data.patch_size': [40, 40, 41] is not divisible" in result.stderr
    assert "[8, 8, 8]" in result.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_unknown_model_argument_is_named_with_suggestion():
    node = OmegaConf.to_container(compose_config(["+preset=quick_test"]).model, resolve=True)
    node["featurs"] = node.pop("features")
    problems = target_problems(node, "model")
    assert problems == ["unknown config key 'model.featurs' (did you mean 'features'?)"]


def test_missing_pretrained_path_names_the_key(tmp_path):
    result = run_train(["+preset=fine_tuning"], tmp_path, timeout=120)
    assert result.returncode == 2
    assert "trainer.pretrained" in result.stderr and "Traceback" not in result.stderr

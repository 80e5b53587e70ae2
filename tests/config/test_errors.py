"""A wrong key or value ends with one readable line naming the key, and a non-zero exit.

The command-line cases (unknown keys, wrong types, ranges, patch divisibility) are rows of the
bad-input corpus in tests/reliability/test_bad_inputs.py.
"""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from hybrid_unet.config.validate import target_problems
from tests.helpers import cli, compose_config


def test_unknown_model_argument_is_named_with_suggestion():
    node = OmegaConf.to_container(compose_config(["+preset=quick_test"]).model, resolve=True)
    node["featurs"] = node.pop("features")
    problems = target_problems(node, "model")
    assert problems == ["unknown config key 'model.featurs' (did you mean 'features'?)"]


def test_missing_pretrained_path_names_the_key(tmp_path):
    result = cli(["+preset=fine_tuning"], tmp_path)
    assert result.code == 2
    assert "trainer.pretrained" in result.stderr and "Traceback" not in result.stderr
    assert ("config key 'trainer.pretrained' is required: pass trainer.pretrained=... or set "
            "the environment variable HYBRID_UNET_PRETRAINED") in result.stderr  # fmt: skip
    assert "KeyError" not in result.stderr


def test_a_parameter_the_config_leaves_out_is_added_with_plus(tmp_path):
    """``p_rotate`` is an argument of the augmentation's _target_ but not in its YAML: the
    message says how to add it instead of suggesting a different key."""
    result = cli(["+experiment=hippocampus_30min", "data.augmentation.p_rotate=0"], tmp_path)
    assert result.code == 2 and "Traceback" not in result.stderr
    assert "'+data.augmentation.p_rotate=...'" in result.stderr


def test_mirrored_validation_without_flipped_training_is_refused(tmp_path):
    """The 6.5-minute recipe trains without augmentation: mirrored validation would score a
    network on flips it never saw (hippocampus: Dice 0.88 -> 0.03 along D)."""
    result = cli(["+experiment=hippocampus_6min", "trainer.val_mirror=true"], tmp_path)
    assert result.code == 2 and "Traceback" not in result.stderr
    assert "trainer.val_mirror" in result.stderr and "flips none" in result.stderr


def test_a_key_given_without_its_group_is_named_with_where_it_lives():
    """``max_epochs=3`` (for ``trainer.max_epochs``) had no hint: no top-level key is close."""
    from hybrid_unet.config.errors import describe_exception

    with pytest.raises(Exception) as info:
        compose_config(["+preset=quick_test", "max_epochs=3"])
    assert describe_exception(info.value) == (
        "unknown config key 'max_epochs' (did you mean 'trainer.max_epochs'?)"
    )


def test_a_key_under_a_null_node_says_the_node_is_null():
    """quick_test trains without augmentation; its probabilities are no unknown keys."""
    from hybrid_unet.config.errors import describe_exception

    with pytest.raises(Exception) as info:
        compose_config(["+preset=quick_test", "data.augmentation.p_flip=0.5"])
    assert describe_exception(info.value) == (
        "unknown config key 'data.augmentation.p_flip': 'data.augmentation' is null or empty in "
        "this config; set it whole, e.g. 'data.augmentation={_target_: ..., p_flip: ...}'"
    )


@pytest.mark.parametrize("group", ["loss", "model", "optimizer", "scheduler"])
def test_a_group_file_without_target_is_one_line(group):
    """A loss YAML without _target_ was passed on as the loss itself: a traceback once training
    ran ("MutableMapping.update() takes ..."); a model's named a key that does not exist."""
    from omegaconf import open_dict

    from hybrid_unet.config.errors import ConfigError
    from hybrid_unet.config.validate import check_config

    cfg = compose_config(["+preset=quick_test", "paths.output_dir=/tmp"])
    with open_dict(cfg):
        del cfg[group]["_target_"]
    with pytest.raises(ConfigError) as info:
        check_config(cfg, choices={})
    assert info.value.problems[0].startswith(f"config key '{group}' has no _target_")

"""Start-up checks: every problem in the composed config, found before any work is done.

Schema-backed sections (``data``, ``trainer``, ``paths``) are merged onto their dataclasses,
which catches keys added with ``+`` that Hydra accepts and ``to_object`` would silently drop.
Every ``_target_`` node is checked against its target's signature, so a new model or loss
needs no schema: its constructor is the schema.
"""

from __future__ import annotations

import collections.abc
import importlib
import inspect
import math
import types
import typing
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hybrid_unet.config.errors import ConfigError, did_you_mean
from hybrid_unet.config.schema import DataConfig, PathsConfig, TrainerConfig

_SCHEMAS = {"data": DataConfig, "trainer": TrainerConfig, "paths": PathsConfig}


def check_config(cfg: DictConfig) -> dict[str, Any]:
    """Resolve ``cfg`` and check it; returns the resolved plain dict.

    Raises:
        ConfigError: listing every problem, one line each, naming the key.
    """
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as exc:
        raise ConfigError([f"config key '{exc.full_key}': {str(exc.msg).splitlines()[0]}"]) from exc
    problems: list[str] = []
    for section, schema in _SCHEMAS.items():
        try:
            OmegaConf.merge(OmegaConf.structured(schema), resolved.get(section, {}))
        except OmegaConfBaseException as exc:
            problems.append(_schema_problem(section, exc))
    _check_targets(resolved, "", problems)
    problems += cross_field_problems(resolved)
    if problems:
        raise ConfigError(problems)
    resolved["trainer"]["precision"] = str(resolved["trainer"]["precision"]).split(".")[-1]
    return resolved


def _schema_problem(section: str, exc: OmegaConfBaseException) -> str:
    key = f"{section}.{exc.full_key}" if exc.full_key else section
    if "not in" in str(exc.msg):
        fields = OmegaConf.structured(_SCHEMAS[section]).keys()
        name = str(exc.key)
        return f"unknown config key '{key}'{did_you_mean(name, fields)}"
    return f"bad value for config key '{key}': {str(exc.msg).splitlines()[0]}"


def _check_targets(node: Any, path: str, problems: list[str]) -> None:
    """Walk the config; check each ``_target_`` node's keys and simple types."""
    if isinstance(node, list):
        for i, item in enumerate(node):
            _check_targets(item, f"{path}[{i}]", problems)
        return
    if not isinstance(node, dict):
        return
    if "_target_" in node:
        problems += target_problems(node, path)
    for key, value in node.items():
        _check_targets(value, f"{path}.{key}" if path else str(key), problems)


def target_problems(node: dict, path: str) -> list[str]:
    """Problems of one ``_target_`` node: an unimportable target, unknown keys, wrong types."""
    target = locate(node["_target_"])
    if target is None:
        return [f"config key '{path}._target_': cannot import '{node['_target_']}'"]
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return []
    params = signature.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return []
    try:
        hints = typing.get_type_hints(target.__init__ if inspect.isclass(target) else target)
    except Exception:
        hints = {}
    problems = []
    for key, value in node.items():
        if key.startswith("_"):
            continue
        if key not in params:
            problems.append(f"unknown config key '{path}.{key}'{did_you_mean(key, params)}")
        elif key in hints and not _matches(value, hints[key]):
            problems.append(
                f"bad value for config key '{path}.{key}': {value!r} is not {_type_name(hints[key])}"
            )
    return problems


def locate(dotted: str) -> Any | None:
    """The object at ``package.module.attr`` (or ``None``), without Hydra's error logging."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def _matches(value: Any, hint: Any) -> bool:
    """Whether a YAML value fits a simple annotation; unknown annotations always match."""
    if value is None or hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple, collections.abc.Sequence) or hint in (list, tuple):
        return isinstance(value, list | tuple)
    return not (inspect.isclass(hint) and hint.__module__ == "torch" and hint.__name__ == "Tensor")


def _type_name(hint: Any) -> str:
    name = getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
    return f"a {name}"


def total_stride(model_cfg: dict) -> tuple[int, int, int] | None:
    """Product of the per-stage strides named in the model config, if it names them."""
    strides = model_cfg.get("strides")
    if not strides:
        return None
    total = [1, 1, 1]
    for stage in strides:
        stage = [stage] * 3 if isinstance(stage, int) else stage
        total = [t * s for t, s in zip(total, stage, strict=True)]
    return tuple(total)


def cross_field_problems(cfg: dict) -> list[str]:
    """Checks that span several groups."""
    problems = []
    patch = cfg["data"].get("patch_size")
    stride = total_stride(cfg["model"]) if isinstance(cfg.get("model"), dict) else None
    if patch is not None and stride is not None:
        if len(patch) != 3:
            problems.append(f"config key 'data.patch_size': needs 3 sizes (D, H, W), got {patch}")
        elif any(p % s for p, s in zip(patch, stride, strict=True)):
            problems.append(
                f"config key 'data.patch_size': {list(patch)} is not divisible by the model's "
                f"total stride {list(stride)} (from model.strides)"
            )
    from hybrid_unet.metrics import METRICS

    for key in ("val_metrics", "final_val_metrics"):
        for name in cfg["trainer"][key]:
            if name not in METRICS:
                problems.append(f"config key 'trainer.{key}': unknown metric '{name}'"
                                f"{did_you_mean(name, METRICS)}")  # fmt: skip
        if "dice" not in cfg["trainer"][key]:
            problems.append(f"config key 'trainer.{key}': must include 'dice' (it picks best.pt)")
    if str(cfg["trainer"]["precision"]).endswith("fp16") and not _cuda_possible(cfg):
        problems.append(
            "config key 'trainer.precision': fp16 needs a CUDA device; use bf16 or fp32"
        )
    if cfg["trainer"]["max_time_minutes"] is not None and not math.isfinite(
        cfg["trainer"]["max_time_minutes"]
    ):
        problems.append("config key 'trainer.max_time_minutes': must be a finite number")
    return problems


def _cuda_possible(cfg: dict) -> bool:
    import torch

    device = str(cfg["trainer"]["device"])
    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())

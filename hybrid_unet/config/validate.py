"""Start-up checks: every problem in the composed config, found before any work is done.

Schema-backed sections (``data``, ``trainer``, ``paths``) are merged onto their dataclasses,
which catches keys added with ``+`` that Hydra accepts and ``to_object`` would silently drop.
Every ``_target_`` node is checked against its target's signature, so a new model or loss
needs no schema: its constructor is the schema.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import importlib
import inspect
import math
import types
import typing
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hybrid_unet.config.errors import ConfigError, did_you_mean, unresolved_key
from hybrid_unet.config.schema import Config, DataConfig, PathsConfig, TrainerConfig

_SCHEMAS = {"data": DataConfig, "trainer": TrainerConfig, "paths": PathsConfig}


def check_config(cfg: DictConfig, choices: dict[str, str] | None = None) -> dict[str, Any]:
    """Resolve ``cfg`` and check it; returns the resolved plain dict.

    ``choices`` (Hydra's group choices, e.g. ``{"preset": "quick_test"}``; by default those of
    the running Hydra app) let an unknown key say which preset or experiment set it.

    Raises:
        ConfigError: listing every problem, one line each, naming the key.
    """
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as exc:
        raise ConfigError([unresolved_key(exc)]) from exc
    problems = root_key_problems(resolved)
    for section, schema in _SCHEMAS.items():
        try:
            OmegaConf.merge(OmegaConf.structured(schema), resolved.get(section, {}))
        except OmegaConfBaseException as exc:
            problems.append(_schema_problem(section, exc))
    problems += [
        f"config key '{group}' has no _target_: nothing says which class to build (a {group} "
        f"YAML of your own names it, e.g. '_target_: my_{group}.MyClass')"
        for group in _BUILT_GROUPS
        if isinstance(resolved.get(group), dict) and "_target_" not in resolved[group]
    ]  # without it the node itself was passed on as the loss (a traceback once training ran)
    _check_targets(resolved, "", problems)
    problems += cross_field_problems(resolved)
    if problems:
        choices = _hydra_choices() if choices is None else choices
        raise ConfigError([problem + _set_by_recipe(problem, choices) for problem in problems])
    resolved["trainer"]["precision"] = str(resolved["trainer"]["precision"]).split(".")[-1]
    return resolved


def root_key_problems(cfg: dict) -> list[str]:
    """Top-level keys the :class:`Config` schema lacks (``+foo=1``, ``+lr=...``): nothing reads
    them, so a run would train as if they were not given."""
    fields = [f.name for f in dataclasses.fields(Config)]
    return [f"unknown config key '{key}'{did_you_mean(str(key), fields)}; top-level keys: "
            f"{', '.join(fields)}" for key in cfg if key not in fields and key != "hydra"]  # fmt: skip


# Config groups each built as one object from their ``_target_``.
_BUILT_GROUPS = ("model", "loss", "optimizer", "scheduler")
# Config groups whose options are ``_global_`` recipes that set keys of other groups.
_RECIPE_GROUPS = ("preset", "experiment")


def _hydra_choices() -> dict[str, str]:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    return {str(k): str(v) for k, v in HydraConfig.get().runtime.choices.items() if v}


def _set_by_recipe(problem: str, choices: dict[str, str]) -> str:
    """For ``unknown config key 'K'`` where the chosen preset or experiment sets ``K`` (presets
    set ``scheduler.warmup_steps``, which a scheduler of one's own may not take): which one set
    it and how to drop it."""
    if not problem.startswith("unknown config key '"):
        return ""
    key = problem.split("'")[1]
    for group in _RECIPE_GROUPS:
        name = choices.get(group)
        if name and _recipe_sets(group, name, key):
            return (f"; +{group}={name} sets it: drop it with ~{key} on the command line, or use "
                    f"a {key.split('.')[0]} that takes it (README: keys presets set)")  # fmt: skip
    return ""


def _recipe_sets(group: str, name: str, key: str) -> bool:
    """Whether the packaged ``conf/<group>/<name>.yaml`` sets the dotted ``key``."""
    from importlib.resources import files

    import yaml

    try:
        node: Any = yaml.safe_load(files("hybrid_unet.conf").joinpath(group, f"{name}.yaml")
                                   .read_text())  # fmt: skip
    except (OSError, yaml.YAMLError):
        return False  # a recipe from a search path of one's own
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


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
    problem = dotted_problem(node["_target_"], f"{path}._target_")
    if problem is not None:
        return [problem]
    target = locate(node["_target_"])
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
    """The object at ``package.module.attr`` (or ``None``), without Hydra's error logging.

    Raises:
        ImportError: a module of the path exists but importing it failed (a dependency it
            imports is missing, it raises); the message is the underlying error.
    """
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        name = ".".join(parts[:cut])
        try:
            obj = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
                continue  # no such module: the name may be an attribute of a shorter one
            raise ImportError(f"importing it failed: {type(exc).__name__}: {exc}") from exc
        except Exception as exc:  # the module exists and failed while importing
            first = (str(exc).strip().splitlines() or [""])[0]
            raise ImportError(f"importing it failed: {type(exc).__name__}: {first}") from exc
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def dotted_problem(dotted: str, key: str) -> str | None:
    """Why config key ``key``'s dotted path names nothing importable, or ``None`` if it does."""
    why = import_failure(dotted)
    return None if why is None else f"config key '{key}': cannot import '{dotted}'{why}"


def import_failure(dotted: str) -> str | None:
    """``None`` when ``dotted`` names an object; else the end of a message saying why not: the
    closest names of its module for a misspelt name, the error of a failing import."""
    try:
        if locate(dotted) is not None:
            return None
    except ImportError as exc:
        return f": {exc}"
    module_name = str(dotted).rpartition(".")[0]
    try:
        module = locate(module_name) if module_name else None
    except ImportError:
        module = None
    names = [f"{module_name}.{n}" for n in dir(module) if not n.startswith("_")] if module else []
    return did_you_mean(str(dotted), names)


# Model keys that take a registered name or a dotted path to a class of one's own.
_DOTTED_MODEL_KEYS = ("attention", "shuffle_attention")


def model_part_problems(model: Any) -> list[str]:
    """Dotted paths in the model's attention slots (``model.attention=my_ext.MyMixer``) that
    import nothing: found at start-up, naming the key, instead of inside the model."""
    if not isinstance(model, dict):
        return []
    problems = []
    for key, value in model.items():
        if (key in _DOTTED_MODEL_KEYS or str(key).endswith("_attention")) and "." in str(value):
            problem = dotted_problem(str(value), f"model.{key}") or _built_from_channels(
                str(value), f"model.{key}"
            )
            problems += [problem] if problem is not None else []
    return problems


def _built_from_channels(dotted: str, key: str) -> str | None:
    """Why the class at ``dotted`` cannot be built as ``cls(channels)``, as a model slot
    builds it (it failed inside the model, naming the model's target, not the key)."""
    try:
        inspect.signature(locate(dotted)).bind(1)
    except TypeError as exc:
        return f"config key '{key}': '{dotted}' is built as cls(channels), but {exc}"
    except ValueError:  # no signature to read (a builtin): the model will tell
        return None
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


# Ranges of the schema-backed numbers: (key, interval, may be null). The dataclass schemas check
# types only; a 0 or a NaN here would fail deep inside the run.
_RANGES: list[tuple[str, str, bool]] = [
    ("seed", "[0, 4294967295]", False),
    ("data.num_classes", "[2, 255]", False),
    ("data.in_channels", "[1, inf)", False),
    ("data.batch_size", "[1, inf)", True),
    ("data.num_folds", "[2, inf)", False),
    ("data.fold", "[0, inf)", False),
    ("data.oversample_foreground", "[0.0, 1.0]", False),
    ("data.num_workers", "[0, inf)", False),
    ("data.max_val_cases", "[1, inf)", True),
    ("trainer.max_epochs", "[1, inf)", False),
    ("trainer.steps_per_epoch", "[1, inf)", False),
    ("trainer.val_every", "[1, inf)", False),
    ("trainer.grad_clip", "(0.0, inf)", True),
    ("trainer.num_threads", "[1, inf)", True),
    ("trainer.val_overlap", "[0.0, 0.99]", False),
    ("trainer.val_sw_batch_size", "[1, inf)", False),
    ("trainer.val_tolerance_mm", "(0.0, inf)", False),
    ("trainer.max_time_minutes", "(0.0, inf)", True),
    ("trainer.freeze_encoder_epochs", "[0, inf)", False),
    ("trainer.max_bad_steps", "[1, inf)", False),
    ("trainer.accumulate_grad_batches", "[1, inf)", False),
    ("trainer.ema_decay", "(0.0, 1.0)", True),  # 1 would never move the average
    ("trainer.checkpoint.save_top_k", "[-1, inf)", False),
    ("trainer.checkpoint.every_n_epochs", "[1, inf)", True),
    ("trainer.early_stopping.patience", "[1, inf)", True),
    ("trainer.early_stopping.min_delta", "[0.0, inf)", False),
    ("optimizer.lr", "(0.0, inf)", True),  # null: an optimizer without the key
    ("optimizer.weight_decay", "[0.0, inf)", True),
]


def _within(value: float, interval: str) -> bool:
    """Whether ``value`` lies in ``interval``, written ``[low, high)`` (``inf`` allowed)."""
    low, high = (float(x) for x in interval[1:-1].split(","))
    above = value >= low if interval[0] == "[" else value > low
    below = value <= high if interval[-1] == "]" else value < high
    return math.isfinite(value) and above and below


def range_problems(cfg: dict) -> list[str]:
    """Numbers outside their meaningful range (zero epochs, a NaN overlap, fold 7 of 5)."""
    problems = []
    for key, interval, nullable in _RANGES:
        node: Any = cfg
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            if not nullable and _present(cfg, key):
                problems.append(f"config key '{key}': must not be null")
            continue
        if isinstance(node, bool) or not isinstance(node, int | float):
            continue  # a type problem, reported by the schema check
        if not _within(node, interval):
            problems.append(f"config key '{key}': {node} is outside {interval}")
    data = cfg.get("data") or {}
    fold, folds = data.get("fold"), data.get("num_folds")
    if isinstance(fold, int) and isinstance(folds, int) and folds >= 2 and fold >= folds:
        problems.append(f"config key 'data.fold': {fold} but data.num_folds={folds}")
    for key in ("trainer.checkpoint.mode", "trainer.early_stopping.mode"):
        section, sub, name = key.split(".")
        value = ((cfg.get(section) or {}).get(sub) or {}).get(name, "max")
        if value not in ("min", "max"):
            problems.append(f"config key '{key}': must be 'min' or 'max', got {value!r}")
    return problems


def _present(cfg: dict, key: str) -> bool:
    node: Any = cfg
    for part in key.split(".")[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    return isinstance(node, dict) and key.split(".")[-1] in node


def cross_field_problems(cfg: dict) -> list[str]:
    """Checks that span several groups."""
    problems = range_problems(cfg)
    patch = cfg["data"].get("patch_size")
    stride = total_stride(cfg["model"]) if isinstance(cfg.get("model"), dict) else None
    if patch is not None and (
        not isinstance(patch, list)
        or len(patch) != 3
        or not all(isinstance(p, int) and not isinstance(p, bool) and p >= 1 for p in patch)
    ):
        problems.append(
            f"config key 'data.patch_size': needs 3 positive sizes (D, H, W), got {patch}"
        )
    elif (
        patch is not None
        and stride is not None
        and any(p % s for p, s in zip(patch, stride, strict=True))
    ):
        problems.append(
            f"config key 'data.patch_size': {list(patch)} is not divisible by the model's "
            f"total stride {list(stride)} (from model.strides)"
        )
    augmentation = cfg["data"].get("augmentation")
    if augmentation is not None and not (
        isinstance(augmentation, dict) and "_target_" in augmentation
    ):
        problems.append(
            "config key 'data.augmentation': must be null (no augmentation) or a node with a "
            f"_target_ (e.g. data=hippocampus's), got {augmentation}"
        )
    elif isinstance(augmentation, dict) and "flip_axes" in augmentation:
        axes = augmentation["flip_axes"]
        if not isinstance(axes, list) or not all(
            isinstance(a, int) and not isinstance(a, bool) and 0 <= a <= 2 for a in axes
        ):
            problems.append(f"config key 'data.augmentation.flip_axes': {axes} is not a list of "
                            "spatial axes 0 (D), 1 (H), 2 (W)")  # fmt: skip
    from hybrid_unet.metrics import METRICS

    for key in ("val_metrics", "final_val_metrics"):
        for name in cfg["trainer"][key]:
            if name not in METRICS:
                problems.append(f"config key 'trainer.{key}': unknown metric '{name}'"
                                f"{did_you_mean(name, METRICS)}")  # fmt: skip
        if "dice" not in cfg["trainer"][key]:
            problems.append(f"config key 'trainer.{key}': must include 'dice' (it picks best.pt)")
    problems += monitor_problems(cfg)
    problems += model_part_problems(cfg.get("model"))
    problems += per_class_problems(cfg.get("loss"), "loss", cfg["data"].get("num_classes"))
    if cfg["trainer"].get("val_mirror") and not problems:
        from hybrid_unet.data.transforms import trained_flip_axes

        if trained_flip_axes(cfg["data"].get("augmentation")) == ():
            problems.append(
                "config key 'trainer.val_mirror': validation mirrors along the axes training "
                "flips (data.augmentation p_flip / flip_axes), and this run flips none: a "
                "network that never saw a flip scores mirrored windows as different anatomy. "
                "Set trainer.val_mirror=false or train with flips"
            )
    if str(cfg["trainer"]["precision"]).endswith("fp16") and not _cuda_possible(cfg):
        problems.append(
            "config key 'trainer.precision': fp16 needs a CUDA device; use bf16 or fp32"
        )
    if cfg["trainer"]["max_time_minutes"] is not None and not math.isfinite(
        cfg["trainer"]["max_time_minutes"]
    ):
        problems.append("config key 'trainer.max_time_minutes': must be a finite number")
    return problems


# What every epoch logs besides the validation metrics (engine/trainer.py end_epoch); a learned
# or scheduled loss adds ``loss/<name>`` columns.
_EPOCH_METRICS = ("epoch", "train_loss", "lr", "grad_norm", "elapsed_s", "system/peak_memory_mb")


def logged_metric_names(cfg: dict) -> list[str]:
    """The metrics.csv columns a ``monitor`` can name: the per-epoch values and, for each
    metric every validation computes, ``<metric>_<class>`` (classes 1..K-1) and ``mean_<metric>``.

    A run that validates only at its end (``val_every >= max_epochs``) computes
    ``final_val_metrics`` there; otherwise the metrics of both lists must be logged each time.
    """
    t = cfg["trainer"]
    final = [m for m in t["final_val_metrics"] if isinstance(m, str)]
    every = [m for m in t["val_metrics"] if isinstance(m, str)]
    only_final = isinstance(t.get("val_every"), int) and t["val_every"] >= t["max_epochs"]
    names = final if only_final else [m for m in every if m in final]
    classes = cfg["data"].get("num_classes")
    classes = classes if isinstance(classes, int) and not isinstance(classes, bool) else 2
    columns = list(_EPOCH_METRICS)
    for name in names:
        columns += [f"mean_{name}", *(f"{name}_{c}" for c in range(1, classes))]
    return columns


def monitor_problems(cfg: dict) -> list[str]:
    """A ``monitor`` naming no logged metric fails at the first validation, after an epoch of
    training: refuse it at start-up instead, with the closest names."""
    problems = []
    columns = logged_metric_names(cfg)
    for section in ("checkpoint", "early_stopping"):
        node = cfg["trainer"].get(section)
        monitor = node.get("monitor") if isinstance(node, dict) else None
        if section == "early_stopping" and isinstance(node, dict) and node.get("patience") is None:
            continue  # early stopping is off: its monitor is never read
        if not isinstance(monitor, str) or monitor in columns or monitor.startswith("loss/"):
            continue
        problems.append(f"config key 'trainer.{section}.monitor': '{monitor}' is not a logged "
                        f"metric{did_you_mean(monitor, columns)}; validation logs mean_<metric> "
                        "and <metric>_<class> of trainer.val_metrics, every epoch train_loss")  # fmt: skip
    return problems


# Loss arguments that, given as a list, hold one value per class (background included).
_PER_CLASS_KEYS = ("class_weights", "weight", "alpha")


def per_class_problems(node: Any, path: str, num_classes: Any) -> list[str]:
    """Per-class loss lists (``class_weights``, ``weight``, ``alpha``) of another length than
    ``data.num_classes``, in the loss node and the losses nested in it (a combined loss)."""
    if not isinstance(num_classes, int) or isinstance(num_classes, bool):
        return []
    if isinstance(node, list):
        return [p for i, item in enumerate(node)
                for p in per_class_problems(item, f"{path}[{i}]", num_classes)]  # fmt: skip
    if not isinstance(node, dict):
        return []
    problems = []
    for key, value in node.items():
        if key in _PER_CLASS_KEYS and isinstance(value, list):
            if len(value) != num_classes:
                problems.append(f"config key '{path}.{key}': {len(value)} values {value} but "
                                f"data.num_classes={num_classes} (one per class, background "
                                "included)")  # fmt: skip
        else:
            problems += per_class_problems(value, f"{path}.{key}", num_classes)
    return problems


def _cuda_possible(cfg: dict) -> bool:
    import torch

    device = str(cfg["trainer"]["device"])
    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())

"""Config problems as short readable messages instead of tracebacks."""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Iterable
from typing import Any


class ConfigError(Exception):
    """One or more config problems; ``str()`` lists one per line, each naming its key."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest options, or an empty string."""
    close = difflib.get_close_matches(word, list(options), n=3, cutoff=0.6)
    if not close:
        return ""
    return " (did you mean " + " or ".join(f"'{c}'" for c in close) + "?)"


def did_you_mean_path(key: str, node: Any) -> str:
    """`` (did you mean 'trainer.max_epochs'?)`` for the keys named ``key`` elsewhere in the
    config ``node`` belongs to (``max_epochs=3`` given at the top level), or an empty string."""
    from omegaconf import DictConfig, OmegaConf

    try:
        root = node._get_root() if node is not None else None
        tree = OmegaConf.to_container(root, resolve=False) if isinstance(root, DictConfig) else {}
    except Exception:  # a hint must never hide the error itself
        return ""
    found: list[str] = []

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                full = f"{path}.{k}" if path else str(k)
                if str(k) == key and path:
                    found.append(full)
                walk(v, full)

    walk(tree, "")
    if not found:
        return ""
    return " (did you mean " + " or ".join(f"'{f}'" for f in sorted(found)[:3]) + "?)"


def describe_exception(exc: BaseException) -> str:
    """One line for a Hydra/OmegaConf composition error, naming the key or option at fault."""
    from hydra.errors import MissingConfigException
    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

    cause = exc.__cause__ if exc.__cause__ is not None else exc
    if (
        isinstance(exc, MissingConfigException)
        and exc.missing_cfg_file
        and "/" in str(exc.missing_cfg_file)
    ):
        missing = (exc.missing_cfg_file or "").split("/")[-1]
        group = "/".join((exc.missing_cfg_file or "").split("/")[:-1])
        # Hydra lists the options only for a single choice, not for a list (logger=[a,b]).
        options = sorted(exc.options if exc.options is not None else _package_options(group))
        return (f"unknown option '{missing}' for config group '{group}'"
                f"{did_you_mean(missing, options)}; available: {', '.join(options)}")  # fmt: skip
    if isinstance(cause, ConfigKeyError) or (
        isinstance(cause, OmegaConfBaseException) and "not in" in str(cause.msg)
    ):
        parent = cause.parent_node
        siblings = list(parent.keys()) if parent is not None and hasattr(parent, "keys") else []
        key = str(cause.key) if cause.key is not None else ""
        if _target_takes(parent, key):
            return (f"config key '{cause.full_key}' is not set in the config, though its "
                    f"_target_ takes it: add it with '+{cause.full_key}=...'")  # fmt: skip
        node = str(cause.full_key).rpartition(".")[0]
        if parent is not None and not siblings and node:  # a null node: nothing to set in it
            return (f"unknown config key '{cause.full_key}': '{node}' is null or empty in this "
                    f"config; set it whole, e.g. '{node}={{_target_: ..., {key}: ...}}'")  # fmt: skip
        hint = did_you_mean(key, siblings) or did_you_mean_path(key, parent)
        return f"unknown config key '{cause.full_key}'{hint}"
    if isinstance(cause, ValidationError):
        first = str(cause.msg).splitlines()[0]
        return f"bad value for config key '{cause.full_key}': {first}"
    if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None):
        return unresolved_key(cause)
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines[:2]) if lines else type(exc).__name__


def unresolved_key(exc) -> str:
    """One line for an OmegaConf error at a key, e.g. one that cannot be resolved."""
    env = re.search(r"Environment variable '([^']+)' not found", str(exc.msg))
    if env:  # ${oc.env:NAME} with NAME unset (e.g. +preset=fine_tuning's checkpoint)
        return (f"config key '{exc.full_key}' is required: pass {exc.full_key}=... or set the "
                f"environment variable {env.group(1)}")  # fmt: skip
    return f"config key '{exc.full_key}': {str(exc.msg).splitlines()[0]}"


def _package_options(group: str) -> list[str]:
    """The options of a config group shipped with the package."""
    from importlib.resources import files

    folder = files("hybrid_unet.conf").joinpath(*group.split("/"))
    try:
        return [p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml")]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _target_takes(node: object, key: str) -> bool:
    """Whether the ``_target_`` of a config node has a parameter named ``key``."""
    from hydra.utils import get_object

    target = node.get("_target_") if hasattr(node, "get") else None
    if not key or not isinstance(target, str):
        return False
    try:
        return key in inspect.signature(get_object(target)).parameters
    except Exception:  # an unimportable target is reported elsewhere
        return False

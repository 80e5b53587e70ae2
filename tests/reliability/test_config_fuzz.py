"""Config fuzzing: random overrides, inside the schema and outside it, never crash unexplained.

Each example composes the config with 1-2 random overrides and runs the start-up path of
``python -m hybrid_unet.train`` up to the data (config check, model, loss, optimizer,
scheduler, checkpoint manager). ``RELIABILITY_FUZZ_EXAMPLES=1000`` runs a longer search. Either
that succeeds, or the exception is one the entry point
turns into an ``error:`` message (``hybrid_unet.cli.user_error``), never a traceback.
"""

from __future__ import annotations

import math
import os
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from hybrid_unet.cli import user_error
from hybrid_unet.config.errors import ConfigError, describe_exception
from hybrid_unet.config.validate import check_config
from hybrid_unet.engine import build
from hybrid_unet.engine.manager import CheckpointManager
from tests.helpers import compose_config

pytestmark = pytest.mark.reliability

BASE = ["+preset=quick_test", "paths.output_dir=unused"]  # as a Hydra run sets it
GROUPS = {
    "model": ["hybrid_unet_small", "plain_unet", "segresnet", "dynunet"],
    "loss": ["dice_ce", "dice", "focal", "tversky", "combined", "adaptive_uncertainty"],
    "optimizer": ["adamw", "sgd"],
    "scheduler": ["warmup_poly", "warmup_cosine", "plateau"],
}

OPTIONS = sorted({o for opts in GROUPS.values() for o in opts})


def _leaves(node, prefix=""):
    if isinstance(node, dict):
        for key, value in node.items():
            if not str(key).startswith("_"):
                yield from _leaves(value, f"{prefix}{key}.")
    else:
        yield prefix[:-1]


_CFG = OmegaConf.to_container(compose_config(BASE), resolve=False)
_CFG.pop("paths", None)
LEAVES = sorted(k for k in _leaves(_CFG) if k != "run_name")


def _fmt_float(x: float) -> str:
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf") if math.isinf(x) else repr(x)


_WORD = st.text(string.ascii_letters + string.digits + "_", min_size=1, max_size=8)
VALUES = st.one_of(
    st.integers(-3, 64).map(str),
    st.floats(allow_nan=True, allow_infinity=True, width=32).map(_fmt_float),
    st.sampled_from(["true", "false", "null", "''", "[]", "{}", "[1,2]", "abc", "1e9"]),
    st.lists(st.integers(-2, 48), min_size=1, max_size=5).map(
        lambda v: f"[{','.join(map(str, v))}]"
    ),
    _WORD,
)


def _plausible(key: str) -> st.SearchStrategy[str]:
    """Values near the key's current one, of its type: mostly accepted, some out of range."""
    node = _CFG
    for part in key.split("."):
        node = node[part]
    if isinstance(node, bool):
        return st.booleans().map(str).map(str.lower)
    if isinstance(node, int):
        return st.integers(min(node // 2, 0), node * 2 + 1).map(str)
    if isinstance(node, float):
        return st.floats(node / 10, node * 10 + 1e-3).map(repr)
    return st.just(OmegaConf.to_yaml({"v": node}).split(":", 1)[1].strip() or "null")


OVERRIDE = st.one_of(
    st.sampled_from(LEAVES).flatmap(lambda k: _plausible(k).map(lambda v: f"{k}={v}")),
    st.tuples(st.sampled_from(LEAVES), VALUES).map("=".join),  # a schema key, any value
    st.tuples(st.sampled_from(LEAVES), _WORD, VALUES).map(lambda t: f"+{t[0]}.{t[1]}={t[2]}"),
    st.tuples(_WORD, VALUES).map("=".join),  # a key that does not exist
    st.sampled_from(LEAVES).map(lambda k: f"~{k}"),  # a deleted key
    st.tuples(st.sampled_from(sorted(GROUPS)), st.one_of(_WORD, st.sampled_from(OPTIONS))).map(
        "=".join
    ),  # a group option, real or not
    st.text(max_size=12),  # anything at all
)


class ComposeError(ConfigError):
    """Hydra could not compose the overrides: ``main()`` prints "cannot compose the config"."""

    def __init__(self, message: str) -> None:
        super().__init__([f"cannot compose the config: {message}"])


def startup(overrides: list[str]) -> None:
    """What the entry point does before it touches the data; raises what it would raise."""
    try:
        composed = compose_config([*BASE, *overrides])
    except Exception as exc:  # the entry point reports any composition failure in one line
        if user_error(exc) is None:
            raise ComposeError(describe_exception(exc)) from exc
        raise
    cfg = check_config(composed)
    try:
        model = build.build_model(cfg)
        loss = build.build_loss(cfg)
        optimizer = build.build_optimizer(cfg, model, loss)
        build.build_scheduler(cfg, optimizer)
        CheckpointManager("unused", **cfg["trainer"]["checkpoint"])
    except ValueError as exc:  # as hybrid_unet.train does with the Trainer's ValueErrors
        raise ConfigError([f"invalid configuration: {exc}"]) from exc


@pytest.mark.row("config", "random overrides from the schema and outside it (hypothesis)",
                 "start-up succeeds or ends in one explained error, never a traceback")  # fmt: skip
def test_random_overrides_never_crash_unexplained(observe):
    outcomes = {"accepted": 0, "explained": 0}

    @settings(max_examples=int(os.environ.get("RELIABILITY_FUZZ_EXAMPLES", "40")), deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(st.lists(OVERRIDE, min_size=1, max_size=2))
    def check(overrides):
        try:
            startup(overrides)
        except Exception as exc:
            message = user_error(exc)
            assert message, f"unexplained {type(exc).__name__} for {overrides}: {exc}"
            assert "Traceback" not in message and len(message.splitlines()) <= 3 + len(overrides)
            outcomes["explained"] += 1
            return
        outcomes["accepted"] += 1

    check()
    total = sum(outcomes.values())
    assert outcomes["explained"] > total // 4 and outcomes["accepted"] > 0, outcomes
    observe(f"{total} override sets: {outcomes['accepted']} accepted, "
            f"{outcomes['explained']} refused with an error: message", cases=total)  # fmt: skip

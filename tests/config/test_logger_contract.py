"""The ``logger`` group's contract: the arguments ``build_loggers`` passes are the ones the
:class:`Logger` docstring promises and every shipped logger's constructor takes."""

from __future__ import annotations

import inspect
import re

import pytest

from hybrid_unet.logging import base

RECORDED: list[dict] = []


class Recorder:
    def __init__(self, **kwargs) -> None:
        RECORDED.append(kwargs)

    def close(self) -> None: ...


def test_loggers_get_the_arguments_the_protocol_documents(tmp_path):
    RECORDED.clear()
    node = {"_target_": f"{__name__}.Recorder"}
    base.build_loggers({"rec": node}, tmp_path, resume_step=5, states={"rec": {"a": 1}},
                       config={"seed": 1})  # fmt: skip
    (passed,) = RECORDED
    assert passed == {"run_dir": str(tmp_path), "resume_step": 5, "state": {"a": 1},
                      "config": {"seed": 1}}  # fmt: skip
    documented = set(re.findall(r"``(\w+)``", base.Logger.__doc__))
    assert set(passed) <= documented


@pytest.mark.parametrize(
    "target", ["hybrid_unet.logging.csv", "hybrid_unet.logging.tensorboard",
               "hybrid_unet.logging.wandb"],
)  # fmt: skip
def test_every_shipped_logger_takes_those_arguments(target):
    import importlib

    module = importlib.import_module(target)
    classes = [c for _, c in inspect.getmembers(module, inspect.isclass)
               if c.__module__ == target and hasattr(c, "log_scalars")]  # fmt: skip
    assert classes
    for cls in classes:
        params = inspect.signature(cls).parameters
        assert {"run_dir", "resume_step", "state", "config"} <= set(params), cls

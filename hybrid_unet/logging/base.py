"""The small interface every logger implements, and a fan-out over several of them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Protocol

import numpy as np


class Logger(Protocol):
    """What the trainer calls.

    :func:`build_loggers` builds each logger with the keyword arguments ``run_dir`` (str),
    ``resume_step`` (``None`` for a new run), ``state`` (what its :meth:`state_dict` returned
    in the checkpoint resumed from, else ``None``) and ``config`` (the resolved run config), so
    a logger's constructor must accept all four (or ``**kwargs``).
    """

    def log_scalars(self, values: dict[str, float], step: int) -> None: ...

    def log_images(self, images: dict[str, np.ndarray], step: int) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class MultiLogger:
    """Sends every call to each configured logger; a failing logger never stops training.

    A logger that raises (a full disk under TensorBoard, W&B losing its service) is reported
    once on stderr, naming it and the error, and is still called afterwards (it may recover);
    its later failures are counted and reported again when the run closes.
    """

    def __init__(self, loggers: dict[str, Logger]) -> None:
        self.loggers = loggers
        self.failures: dict[str, int] = {}

    def _call(self, name: str, method: str, *args: Any) -> Any:
        try:
            return getattr(self.loggers[name], method)(*args)
        except Exception as exc:
            self.failures[name] = self.failures.get(name, 0) + 1
            if self.failures[name] == 1:
                reason = (str(exc).strip().splitlines() or [""])[0]
                print(f"warning: logger '{name}' failed in {method} ({type(exc).__name__}: "
                      f"{reason}); training continues, its further errors are counted",
                      file=sys.stderr)  # fmt: skip
            return None

    def log_scalars(self, values: dict[str, float], step: int) -> None:
        for name in self.loggers:
            self._call(name, "log_scalars", values, step)

    def log_images(self, images: dict[str, np.ndarray], step: int) -> None:
        for name in self.loggers:
            self._call(name, "log_images", images, step)

    def state_dict(self) -> dict[str, Any]:
        return {name: self._call(name, "state_dict") or {} for name in self.loggers}

    def close(self) -> None:
        for name in self.loggers:
            self._call(name, "close")
        for name, count in self.failures.items():
            print(f"warning: logger '{name}' failed {count} time(s) in this run", file=sys.stderr)


def build_loggers(
    logger_cfg: dict,
    run_dir: str | Path,
    resume_step: int | None,
    states: dict | None = None,
    config: dict | None = None,
) -> MultiLogger:
    """Instantiate each ``_target_`` node of the ``logger`` group for this run dir.

    Every logger gets ``run_dir``, ``resume_step`` (``None`` for a new run), its own saved
    ``state`` and the resolved ``config``.
    """
    from hydra.utils import instantiate

    states = states or {}
    loggers = {}
    for name, node in logger_cfg.items():
        if node is None:
            continue
        # Built partially, then called: the config holds _target_ nodes instantiate would build.
        make = instantiate(node, _partial_=True)
        try:
            loggers[name] = make(
                run_dir=str(run_dir), resume_step=resume_step, state=states.get(name), config=config
            )
        except Exception as exc:  # W&B without network, an unwritable log dir: train anyway
            reason = (str(exc).strip().splitlines() or [""])[0]
            print(f"warning: logger '{name}' could not start ({type(exc).__name__}: {reason}); "
                  "training continues without it", file=sys.stderr)  # fmt: skip
    return MultiLogger(loggers)

"""The small interface every logger implements, and a fan-out over several of them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np


class Logger(Protocol):
    """What the trainer calls. Loggers are built with ``run_dir`` and ``resume_step``."""

    def log_scalars(self, values: dict[str, float], step: int) -> None: ...

    def log_images(self, images: dict[str, np.ndarray], step: int) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class MultiLogger:
    """Sends every call to each configured logger."""

    def __init__(self, loggers: dict[str, Logger]) -> None:
        self.loggers = loggers

    def log_scalars(self, values: dict[str, float], step: int) -> None:
        for logger in self.loggers.values():
            logger.log_scalars(values, step)

    def log_images(self, images: dict[str, np.ndarray], step: int) -> None:
        for logger in self.loggers.values():
            logger.log_images(images, step)

    def state_dict(self) -> dict[str, Any]:
        return {name: logger.state_dict() for name, logger in self.loggers.items()}

    def close(self) -> None:
        for logger in self.loggers.values():
            logger.close()


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
    loggers = {
        # Built partially, then called: the config holds _target_ nodes instantiate would build.
        name: instantiate(node, _partial_=True)(
            run_dir=str(run_dir), resume_step=resume_step, state=states.get(name), config=config
        )
        for name, node in logger_cfg.items()
        if node is not None
    }
    return MultiLogger(loggers)

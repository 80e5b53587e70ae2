"""What the entry points share: user errors become one ``error:`` line and exit code 2."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

from hybrid_unet.config.errors import ConfigError, describe_exception
from hybrid_unet.data.errors import DataError


def exit_on_user_error(exc: Exception) -> None:
    """Print one ``error:`` message and exit 2 if ``exc`` is the user's input, else return."""
    if os.environ.get("HYBRID_UNET_TRACEBACK") == "1":
        return
    message = user_error(exc)
    if message is not None:
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def output_dir_problem(path: str | os.PathLike, what: str = "output") -> str | None:
    """Why ``path`` cannot become an output folder (it is a file, or lies under one), else
    ``None``; ``what`` names the option in the message."""
    folder = Path(path)
    for p in (folder, *folder.parents):
        if p.exists():
            if p.is_dir():
                return None
            where = "is a file" if p == folder else f"lies under the file {p}"
            return f"{what} {folder} {where}, not a folder"
    return None


def plain_warnings() -> None:
    """Print warnings as one ``warning:`` line, without the source line Python adds."""
    warnings.formatwarning = lambda message, *args, **kwargs: f"warning: {message}\n"


def user_error(exc: Exception) -> str | None:
    """The message for errors that are the user's input, ``None`` for bugs."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    cause = exc
    while cause is not None:  # instantiate() wraps a constructor's own error
        if isinstance(cause, DataError | ConfigError):
            return str(cause)
        cause = cause.__cause__
    if isinstance(exc, HydraException | OmegaConfBaseException):
        return describe_exception(exc)
    if isinstance(exc, FileNotFoundError):
        return str(exc)
    from hybrid_unet.engine.step import TrainingDiverged
    from hybrid_unet.engine.trainer import LoaderWorkerDied

    if isinstance(exc, TrainingDiverged | LoaderWorkerDied):
        return str(exc)
    return None

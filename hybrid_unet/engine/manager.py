"""Which checkpoints a run keeps (last, best, top-k, every N epochs) and which one it resumes.

Files in ``<run_dir>/checkpoints``, every one written atomically:

- ``last.pt``: after every epoch (and on a stop signal); the previous one is kept as
  ``last-prev.pt``, so a torn or truncated ``last.pt`` still leaves a recent checkpoint.
- ``best.pt``: the best value of ``monitor`` so far (``save_top_k >= 1``).
- ``top-epochNNNN.pt``: the ``save_top_k`` best validations (only when ``save_top_k > 1``;
  ``-1`` keeps all), worse ones deleted.
- ``epoch-NNNN.pt``: every ``every_n_epochs`` epochs, never deleted.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hybrid_unet.engine.checkpoint import CheckpointError, atomic_save, load_checkpoint

_MODES = ("min", "max")


class CheckpointManager:
    """Writes the checkpoints the ``trainer.checkpoint`` config asks for.

    Args:
        ckpt_dir: ``<run_dir>/checkpoints``.
        monitor: Validation metric that ranks checkpoints (a ``metrics.csv`` column).
        mode: ``max`` when higher is better, ``min`` when lower is.
        save_top_k: Best checkpoints kept (0: none, 1: ``best.pt``, -1: all).
        every_n_epochs: Also keep ``epoch-NNNN.pt`` every N epochs (``None``: never).
    """

    def __init__(
        self,
        ckpt_dir: str | Path,
        monitor: str = "mean_dice",
        mode: str = "max",
        save_top_k: int = 1,
        every_n_epochs: int | None = None,
    ) -> None:
        if mode not in _MODES:
            raise ValueError(f"trainer.checkpoint.mode must be 'min' or 'max', got {mode!r}")
        if save_top_k < -1:
            raise ValueError(f"trainer.checkpoint.save_top_k must be >= -1, got {save_top_k}")
        if every_n_epochs is not None and every_n_epochs < 1:
            raise ValueError(
                f"trainer.checkpoint.every_n_epochs must be >= 1 or null, got {every_n_epochs}"
            )
        self.dir = Path(ckpt_dir)
        self.monitor, self.mode = monitor, mode
        self.save_top_k, self.every_n_epochs = save_top_k, every_n_epochs

    def worst(self) -> float:
        """The starting ``best`` value: anything finite beats it."""
        return -math.inf if self.mode == "max" else math.inf

    def is_better(self, value: float, reference: float) -> bool:
        return improves(value, reference, self.mode)

    def monitored(self, metrics: dict[str, float]) -> float | None:
        """The monitored value of a validation, ``None`` when this epoch did not validate."""
        if self.monitor not in metrics:
            if "mean_dice" in metrics:  # a validation ran, so the name is wrong
                import difflib

                close = difflib.get_close_matches(self.monitor, list(metrics), n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise ValueError(
                    f"trainer.checkpoint.monitor: '{self.monitor}' is not a logged metric{hint}"
                )
            return None
        return float(metrics[self.monitor])

    def save_last(self, payload: dict[str, Any]) -> Path:
        """Write ``last.pt``, keeping the one before as ``last-prev.pt``."""
        # The old last.pt becomes last-prev.pt only once the new one is complete.
        return atomic_save(payload, self.dir / "last.pt", keep_previous_as="last-prev.pt")

    def after_epoch(
        self,
        state: Any,
        metrics: dict[str, float],
        payload: Callable[[], dict[str, Any]],
        write: bool = True,
    ) -> list[Path]:
        """Update ``state.best_*`` / ``state.top_k`` and write best, top-k and every-N files.

        ``payload`` builds the checkpoint (called after ``state`` is updated); ``write=False``
        only updates ``state`` (data-parallel ranks other than 0).
        """
        to_write: list[str] = []
        if self.every_n_epochs and state.epoch % self.every_n_epochs == 0:
            to_write.append(f"epoch-{state.epoch:04d}.pt")
        value = self.monitored(metrics)
        stale: list[str] = []
        if value is not None and self.save_top_k != 0:
            if self.is_better(value, state.best_metric):
                state.best_metric, state.best_epoch = value, state.epoch
                to_write.append("best.pt")
            if (self.save_top_k > 1 or self.save_top_k == -1) and math.isfinite(value):
                entries = [*state.top_k, [value, state.epoch, f"top-epoch{state.epoch:04d}.pt"]]
                entries.sort(key=lambda e: e[0], reverse=self.mode == "max")
                keep = entries if self.save_top_k == -1 else entries[: self.save_top_k]
                stale = [e[2] for e in entries if e not in keep]
                if any(e[1] == state.epoch for e in keep):
                    to_write.append(f"top-epoch{state.epoch:04d}.pt")
                state.top_k = keep
        if not write or (not to_write and not stale):
            return []
        obj = payload()
        written = [atomic_save(obj, self.dir / name) for name in to_write]
        for name in stale:
            (self.dir / name).unlink(missing_ok=True)
        return written

    def candidates(self) -> list[Path]:
        """Checkpoints to resume from, most recent first."""
        named = [self.dir / "last.pt", self.dir / "last-prev.pt"]
        # Not the temporaries of a writer (``.tmp-<pid>-last.pt``): hidden names are skipped.
        others = [p for p in self.dir.glob("*.pt") if p not in named and not p.name.startswith(".")]
        others.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        return [p for p in named if p.exists()] + others


def improves(value: float, best: float, mode: str, min_delta: float = 0.0) -> bool:
    """Whether ``value`` beats ``best`` by more than ``min_delta`` (NaN never does)."""
    if mode not in _MODES:
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    if not math.isfinite(value):
        return False
    return value > best + min_delta if mode == "max" else value < best - min_delta


def load_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint this trainer wrote (``model`` and ``state`` inside), safely loaded.

    Raises:
        CheckpointError: unreadable, corrupt, refused, or not a training checkpoint.
    """
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict) or "state" not in ckpt or "model" not in ckpt:
        raise CheckpointError(path, "not a training checkpoint (no 'state' or 'model' inside)")
    return ckpt


def find_resumable(ckpt_dir: str | Path, quiet: bool = False) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint in ``ckpt_dir`` that loads, with its contents.

    Unreadable ones (a truncated file, a flipped byte, a torn write on a full disk) are skipped
    with a warning naming the file (``quiet``: without, for a look ahead that the resume
    itself repeats).
    """
    for path in CheckpointManager(ckpt_dir).candidates():
        try:
            return path, load_training_checkpoint(path)
        except CheckpointError as exc:  # try the next one
            if not quiet:
                print(f"warning: skipping unreadable checkpoint {path}: {exc.problem}",
                      file=sys.stderr)  # fmt: skip
    return None

"""``metrics.csv``: one row per logged step, columns growing as new metrics appear."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from hybrid_unet.atomic import atomic_path


class CSVLogger:
    """Writes scalars to ``<run_dir>/metrics.csv``.

    The file is rewritten atomically on every call (it is small: one row per epoch), so a run
    killed mid-write never leaves a torn file, and on resume rows past ``resume_step`` are
    dropped so the table reads as one uninterrupted run. Keys starting with ``system/`` (memory
    and the like, which differ between an interrupted and an uninterrupted run) are left to the
    other loggers and ``summary.json``.
    """

    def __init__(
        self, run_dir: str, resume_step: int | None = None, state: dict | None = None,
        config: dict | None = None, filename: str = "metrics.csv",
    ) -> None:  # fmt: skip
        self.path = Path(run_dir) / filename
        self.rows: list[dict[str, Any]] = []
        if resume_step is not None and self.path.exists():
            with open(self.path, newline="") as f:
                self.rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]

    def log_scalars(self, values: dict[str, float], step: int) -> None:
        row = {
            "step": step,
            **{k: _fmt(v) for k, v in values.items() if not k.startswith("system/")},
        }
        if self.rows and int(self.rows[-1]["step"]) == step:
            self.rows[-1].update(row)
        else:
            self.rows.append(row)
        self._write()

    def log_images(self, images: dict[str, np.ndarray], step: int) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass

    def _write(self) -> None:
        columns: list[str] = []
        for row in self.rows:
            columns += [k for k in row if k not in columns]
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.rows)


def _fmt(value: float) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))

"""Data errors whose message is readable on its own: the train entry point prints it and exits."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


class DataError(Exception):
    """A file or folder cannot be used; the message names it and says why."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):
        # Raised in worker processes (validation, preprocessing): Exception's default pickling
        # re-calls __init__ with the message alone, which fails and breaks the process pool.
        return type(self), (self.path, self.problem)


class DatasetValidationError(DataError):
    """Every problem found in a dataset, one line each, raised once after looking at all cases."""

    def __init__(self, root: str | Path, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(root, f"dataset has {len(self.problems)} problem(s):\n{lines}")

    def __reduce__(self):
        return type(self), (self.path, self.problems)

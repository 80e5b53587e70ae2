"""The trainer's progress counters: everything besides tensors that a resume must restore."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass
class TrainState:
    """Where a run is. ``step`` counts optimizer steps; ``epoch`` counts finished epochs."""

    epoch: int = 0
    step: int = 0
    best_metric: float = float("-inf")
    best_epoch: int = -1
    elapsed_seconds: float = 0.0
    epoch_loss_sum: float = 0.0
    epoch_steps: int = 0
    skipped_steps: int = 0
    planned_steps: int = 0  # set when a time budget sized the run (0: the whole run)

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for f in fields(self):
            if f.name in state:
                setattr(self, f.name, state[f.name])

"""The trainer's progress counters: everything besides tensors that a resume must restore."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


@dataclass
class TrainState:
    """Where a run is. ``step`` counts optimizer steps; ``epoch`` counts finished epochs.

    ``best_metric`` and ``best_epoch`` follow ``trainer.checkpoint.monitor``.
    """

    epoch: int = 0
    step: int = 0
    best_metric: float = float("-inf")
    best_epoch: int = -1
    elapsed_seconds: float = 0.0
    epoch_loss_sum: float = 0.0
    epoch_steps: int = 0
    skipped_steps: int = 0
    epoch_skipped: int = 0  # this epoch's skipped steps: not in epoch_loss_sum
    planned_steps: int = 0  # set when a time budget sized the run (0: the whole run)
    best_mean_dice: float = float("-inf")  # reported in the summary whatever is monitored
    top_k: list = field(default_factory=list)  # [value, epoch, file name] of kept checkpoints
    stale_validations: int = 0  # early stopping: validations since the last improvement
    early_stop_best: float | None = None
    bad_steps_in_row: int = 0  # consecutive non-finite steps
    stop_reason: str = ""  # why the run ended early ("" while running or after max_epochs)
    # Saved mid-epoch: each rank's [epoch_loss_sum, epoch_skipped] (rank 0 alone writes the
    # checkpoint), so every rank of a resumed torchrun run finishes its own epoch mean.
    rank_epoch_losses: list = field(default_factory=list)

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for f in fields(self):
            if f.name in state:
                setattr(self, f.name, state[f.name])

"""What a resumed run may change: the run's own keys may, the trained state's may not.

A resume restores the network, loss, optimizer and schedule from the checkpoint, so a new value
for one of their keys would either fail to load (a wider network) or be silently overridden by
the stored state (a learning rate). Those are refused, naming each key, as are a new fold or
split (the network trained on cases the new fold validates on) and a new epoch length (the
stored step and epoch counts, and the LR schedule, are in the old one). Every other change
(more epochs, another batch size, more workers) is applied and listed.
"""

from __future__ import annotations

from typing import Any

from hybrid_unet.config.errors import ConfigError

# Config groups restored from the checkpoint, and the keys inside them that may still change.
_RESTORED = ("model", "loss", "optimizer", "scheduler")
_MAY_CHANGE = {"scheduler.total_steps"}  # extending a run (README: fix it to keep the LR)
# Keys that may differ between two launches of one run without being settings: where it runs
# (a default run_name is the launch time) and how it reports.
NOT_SETTINGS = ("trainer.resume", "trainer.progress", "run_name", "paths.")
# Other keys a resume cannot change, and why.
_FIXED = {
    "data.fold": "split",
    "data.num_folds": "split",
    "data.split_seed": "split",
    "data.train_on_all": "split",
    "trainer.steps_per_epoch": "epoch",
}
_WHY = {
    "state": "restores its network, loss, optimizer and schedule, so these cannot change "
    "(start a new run, with trainer.pretrained to reuse the weights)",
    "split": "trained on its own fold's training cases, so its split cannot change (another "
    "fold would validate on cases it trained on; start a new run for it)",
    "epoch": "counts its steps, epochs and LR schedule in epochs of this length, so it cannot "
    "change (raise trainer.max_epochs to train longer)",
}


def _fixed(key: str) -> str | None:
    """Why ``key`` cannot change on resume, as a key of ``_WHY``; None if it may."""
    if key in _MAY_CHANGE:
        return None
    if key.split(".")[0] in _RESTORED:
        return "state"
    return _FIXED.get(key)


def config_changes(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """``(dotted key, old value, new value)`` for every leaf that differs, in key order."""
    if isinstance(old, dict) and isinstance(new, dict):
        changes = []
        for key in sorted(set(old) | set(new), key=str):
            dotted = f"{prefix}.{key}" if prefix else str(key)
            changes += config_changes(old.get(key), new.get(key), dotted)
        return changes
    return [] if old == new else [(prefix, old, new)]


def check_resume_config(old: dict, new: dict, checkpoint: str) -> list[str]:
    """The notices for a resume from ``checkpoint`` (trained with ``old``) under ``new``.

    Raises:
        ConfigError: one line per changed key of the restored state.
    """
    changes = [c for c in config_changes(old, new) if not c[0].startswith(NOT_SETTINGS)]
    problems = []
    for why, text in _WHY.items():
        refused = [f"{key}: {before!r} in the checkpoint, {after!r} now"
                   for key, before, after in changes if _fixed(key) == why]  # fmt: skip
        if refused:
            problems.append(f"trainer.resume: {checkpoint} {text}:\n"
                            + "\n".join(f"  - {line}" for line in refused))  # fmt: skip
    if problems:
        raise ConfigError(problems)
    return [f"  {key}: {before!r} -> {after!r}" for key, before, after in changes]

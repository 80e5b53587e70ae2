"""What a resumed run may change: the run's own keys may, the trained state's may not.

A resume restores the network, loss, optimizer and schedule from the checkpoint, so a new value
for one of their keys would either fail to load (a wider network) or be silently overridden by
the stored state (a learning rate). Those are refused, naming each key; every other change
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
    refused = [
        f"{key}: {before!r} in the checkpoint, {after!r} now"
        for key, before, after in changes
        if key.split(".")[0] in _RESTORED and key not in _MAY_CHANGE
    ]
    if refused:
        raise ConfigError([
            f"trainer.resume: {checkpoint} restores its network, loss, optimizer and schedule, "
            "so these cannot change (start a new run, with trainer.pretrained to reuse the "
            "weights):\n" + "\n".join(f"  - {line}" for line in refused)
        ])  # fmt: skip
    return [
        f"  {key}: {before!r} -> {after!r}"
        for key, before, after in changes
        if key.split(".")[0] not in _RESTORED or key in _MAY_CHANGE
    ]

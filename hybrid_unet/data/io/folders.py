"""What counts as an entry of a data folder."""

from __future__ import annotations

from pathlib import Path


def visible_entries(folder: str | Path) -> list[Path]:
    """The entries of ``folder``, sorted, without hidden ones: macOS ``._*`` copies and
    ``.DS_Store``, the ``.tmp-*`` temporaries of an interrupted write (``hybrid_unet.atomic``)."""
    return sorted(p for p in Path(folder).iterdir() if not p.name.startswith("."))

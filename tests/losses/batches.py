"""Small random batches shared by the loss tests (kept tiny: the suite must stay fast on CPU).

A plain module with a unique name rather than conftest.py, so that ``import batches`` cannot
resolve to another folder's conftest.
"""

from __future__ import annotations

import torch


def make_batch(
    b: int = 2,
    k: int = 3,
    shape: tuple[int, ...] = (4, 5, 6),
    seed: int = 0,
    empty_class: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random logits ``(B, K, *shape)``, labels ``(B, 1, *shape)``; ``empty_class`` never occurs."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn((b, k, *shape), generator=g) * 2.0
    target = torch.randint(0, k, (b, 1, *shape), generator=g)
    if empty_class is not None:
        target[target == empty_class] = (empty_class + 1) % k
    return logits, target

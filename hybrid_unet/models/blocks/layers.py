"""Small shared layers and the one place where config strings become layer types.

Blocks receive layer *factories* (``norm(num_channels) -> nn.Module``, ``act() -> nn.Module``);
only the model constructors call :func:`get_norm` / :func:`get_act` on user-typed names.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import nn

NormFactory = Callable[[int], nn.Module]
ActFactory = Callable[[], nn.Module]


def lookup(name: str, options: Sequence[str], what: str) -> str:
    """Return ``name`` lower-cased if it is one of ``options``, else raise with close matches.

    Raises:
        ValueError: naming the unknown value, the close matches and all valid options.
    """
    key = str(name).lower()
    if key in options:
        return key
    close = difflib.get_close_matches(key, list(options), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"Unknown {what} {name!r}.{hint} Valid options: {sorted(options)}.")


def _group_norm(num_channels: int, max_groups: int = 8) -> nn.GroupNorm:
    # The largest group count <= max_groups that divides the channels, so odd widths still work.
    groups = max(g for g in range(1, max_groups + 1) if num_channels % g == 0)
    return nn.GroupNorm(groups, num_channels, affine=True)


NORMS: dict[str, NormFactory] = {
    "instance": partial(nn.InstanceNorm3d, affine=True),
    "group": _group_norm,
    "batch": nn.BatchNorm3d,
}

ACTS: dict[str, ActFactory] = {
    "leakyrelu": partial(nn.LeakyReLU, negative_slope=0.01, inplace=True),
    "relu": partial(nn.ReLU, inplace=True),
    "gelu": nn.GELU,
    "silu": partial(nn.SiLU, inplace=True),
}


def get_norm(name: str) -> NormFactory:
    """Resolve a normalisation name ("instance", "group", "batch") to a factory."""
    return NORMS[lookup(name, tuple(NORMS), "norm")]


def get_act(name: str) -> ActFactory:
    """Resolve an activation name ("leakyrelu", "relu", "gelu", "silu") to a factory."""
    return ACTS[lookup(name, tuple(ACTS), "activation")]


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample while training.

    Args:
        p: probability of dropping a sample's branch, in [0, 1).
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop path probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class LayerNorm3d(nn.LayerNorm):
    """LayerNorm over the channel axis of a volume ``(B, C, D, H, W)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 4, 1)
        x = super().forward(x)
        return x.permute(0, 4, 1, 2, 3)


def triple(value: int | Sequence[int], what: str) -> tuple[int, int, int]:
    """Expand an int or a 3-sequence of positive ints to a (D, H, W) tuple."""
    if isinstance(value, int):
        value = (value, value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 3 or any(v < 1 for v in value):
        raise ValueError(f"{what} must be a positive int or three positive ints, got {value}")
    return value  # type: ignore[return-value]

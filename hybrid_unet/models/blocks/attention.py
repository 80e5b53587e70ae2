"""Attention blocks for 3D volumes ``(B, C, D, H, W)``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from hybrid_unet.models.blocks.layers import ActFactory, triple


class SqueezeExcitation3d(nn.Module):
    """Channel gating from globally pooled features (Hu et al.).

    Args:
        channels: channels C of the input.
        reduction: hidden width is ``max(4, channels // reduction)``.
        act: activation factory for the hidden layer.

    Shape: ``(B, C, D, H, W) -> (B, C, D, H, W)``.
    """

    def __init__(self, channels: int, reduction: int = 4, act: ActFactory = nn.SiLU) -> None:
        super().__init__()
        if channels < 1 or reduction < 1:
            raise ValueError(f"channels and reduction must be >= 1, got {channels}, {reduction}")
        hidden = max(4, channels // reduction)
        self.fc1 = nn.Conv3d(channels, hidden, 1)
        self.act = act()
        self.fc2 = nn.Conv3d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3, 4), keepdim=True)
        return x * torch.sigmoid(self.fc2(self.act(self.fc1(s))))


class ShuffleAttention3d(nn.Module):
    """Shuffle attention (SA-Net idea) for volumes.

    Channels are split into ``groups``; each group is halved into a channel-attention half
    (global pooling, per-channel affine, sigmoid) and a spatial-attention half (GroupNorm,
    per-channel affine, sigmoid). The halves are concatenated and channels shuffled so that
    information crosses groups.

    Args:
        channels: channels C; must be divisible by ``2 * groups``.
        groups: number of channel groups.

    Shape: ``(B, C, D, H, W) -> (B, C, D, H, W)``.
    """

    def __init__(self, channels: int, groups: int = 4) -> None:
        super().__init__()
        if groups < 1 or channels % (2 * groups):
            raise ValueError(
                f"ShuffleAttention3d needs channels divisible by 2 * groups, got channels="
                f"{channels}, groups={groups}"
            )
        self.groups = groups
        half = channels // (2 * groups)
        self.c_weight = nn.Parameter(torch.zeros(1, half, 1, 1, 1))
        self.c_bias = nn.Parameter(torch.ones(1, half, 1, 1, 1))
        self.s_weight = nn.Parameter(torch.zeros(1, half, 1, 1, 1))
        self.s_bias = nn.Parameter(torch.ones(1, half, 1, 1, 1))
        # No affine here: s_weight and s_bias are the affine, and a zero-initialised s_weight
        # would leave GroupNorm's own affine without gradient.
        self.norm = nn.GroupNorm(half, half, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        x = rearrange(x, "b (g c) d h w -> (b g) c d h w", g=self.groups)
        xc, xs = x.chunk(2, dim=1)
        xc = xc * torch.sigmoid(self.c_weight * xc.mean(dim=(2, 3, 4), keepdim=True) + self.c_bias)
        xs = xs * torch.sigmoid(self.s_weight * self.norm(xs) + self.s_bias)
        x = torch.cat([xc, xs], dim=1)
        x = rearrange(x, "(b g) c d h w -> b (g c) d h w", b=b)
        return rearrange(x, "b (two c) d h w -> b (c two) d h w", two=2)


class MultiHeadSelfAttention3d(nn.Module):
    """Multi-head self-attention over the voxels of a volume, optionally in windows.

    The volume is flattened to tokens ``(B, N, C)``; with ``window_size`` the volume is padded
    to a multiple of the window (padded voxels masked out as keys) and attention runs inside
    each non-overlapping window, so the cost is linear in the volume. Position comes from the
    caller (a depthwise-conv position encoding in :class:`HybridEncoderBlock`), so any input
    size works.

    Args:
        dim: channels C; must be divisible by ``num_heads``.
        num_heads: attention heads.
        window_size: None for global attention, else int or (D, H, W) window; a window
            larger than the map is clipped to the map.
        qkv_bias: bias in the qkv projection.
        attn_drop: dropout on attention weights (training only).
        fused: use ``F.scaled_dot_product_attention``; False runs the explicit softmax path.

    Shape: ``(B, C, D, H, W) -> (B, C, D, H, W)``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 4,
        window_size: int | Sequence[int] | None = None,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        fused: bool = True,
    ) -> None:
        super().__init__()
        if num_heads < 1 or dim % num_heads:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        if not 0.0 <= attn_drop < 1.0:
            raise ValueError(f"attn_drop must be in [0, 1), got {attn_drop}")
        self.num_heads = num_heads
        self.window_size = None if window_size is None else triple(window_size, "window_size")
        self.scale = (dim // num_heads) ** -0.5
        self.attn_drop = attn_drop
        self.fused = fused
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def _attend(self, tokens: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Attention over tokens ``(B', N, C) -> (B', N, C)``; ``key_mask (B', N)`` True = keep."""
        qkv = rearrange(
            self.qkv(tokens), "b n (three h e) -> three b h n e", three=3, h=self.num_heads
        )
        q, k, v = qkv.unbind(0)
        drop = self.attn_drop if self.training else 0.0
        mask = None if key_mask is None else rearrange(key_mask, "b n -> b 1 1 n")
        if self.fused:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            if mask is not None:
                attn = attn.masked_fill(~mask, float("-inf"))
            attn = F.dropout(attn.softmax(dim=-1), drop, self.training)
            out = attn @ v
        return self.proj(rearrange(out, "b h n e -> b n (h e)"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d, h, w = x.shape[2:]
        if self.window_size is None:
            tokens = rearrange(x, "b c d h w -> b (d h w) c")
            out = self._attend(tokens)
            return rearrange(out, "b (d h w) c -> b c d h w", d=d, h=h, w=w)
        wd, wh, ww = (min(s, m) for s, m in zip(self.window_size, (d, h, w), strict=True))
        pad = [(-n) % s for n, s in zip((d, h, w), (wd, wh, ww), strict=True)]
        key_mask = None
        if any(pad):
            # Padded voxels must not be attended to: mask them as keys in every window.
            valid = F.pad(
                x.new_ones(1, 1, d, h, w, dtype=torch.bool), (0, pad[2], 0, pad[1], 0, pad[0])
            )
            key_mask = repeat(
                valid[0, 0],
                "(nd wd) (nh wh) (nw ww) -> (b nd nh nw) (wd wh ww)",
                b=x.shape[0],
                wd=wd,
                wh=wh,
                ww=ww,
            )
            x = F.pad(x, (0, pad[2], 0, pad[1], 0, pad[0]))
        nd, nh, nw = (n // s for n, s in zip(x.shape[2:], (wd, wh, ww), strict=True))
        tokens = rearrange(
            x,
            "b c (nd wd) (nh wh) (nw ww) -> (b nd nh nw) (wd wh ww) c",
            wd=wd,
            wh=wh,
            ww=ww,
        )
        out = self._attend(tokens, key_mask)
        out = rearrange(
            out,
            "(b nd nh nw) (wd wh ww) c -> b c (nd wd) (nh wh) (nw ww)",
            nd=nd,
            nh=nh,
            nw=nw,
            wd=wd,
            wh=wh,
        )
        return out[:, :, :d, :h, :w]


__all__ = [
    "MultiHeadSelfAttention3d",
    "ShuffleAttention3d",
    "SqueezeExcitation3d",
]

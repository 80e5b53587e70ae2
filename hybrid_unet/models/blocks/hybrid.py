"""The hybrid encoder block: a conv path followed by pre-norm token mixing and an MLP."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import nn

from hybrid_unet.models.blocks.attention import (
    MultiHeadSelfAttention3d,
    ShuffleAttention3d,
    SqueezeExcitation3d,
)
from hybrid_unet.models.blocks.conv import ConvNormAct3d, MBConv3d, ResidualConvBlock3d
from hybrid_unet.models.blocks.depthwise import DepthwiseConv3d
from hybrid_unet.models.blocks.layers import (
    ActFactory,
    DropPath,
    LayerNorm3d,
    NormFactory,
    lookup,
    triple,
)

ConvFactory = Callable[..., nn.Module]


def _dense(cin, cout, kernel, stride, norm, act, drop_path, expand_ratio, se) -> nn.Module:
    return ConvNormAct3d(cin, cout, kernel, stride, norm, act)


def _residual(cin, cout, kernel, stride, norm, act, drop_path, expand_ratio, se) -> nn.Module:
    return ResidualConvBlock3d(cin, cout, kernel, stride, norm, act, drop_path)


def _mbconv(cin, cout, kernel, stride, norm, act, drop_path, expand_ratio, se) -> nn.Module:
    se_layer = SqueezeExcitation3d if se else None
    return MBConv3d(cin, cout, kernel, stride, expand_ratio, norm, act, se_layer, drop_path)


def _conv_mixer(dim: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv3d(dim, 2 * dim, 1),
        DepthwiseConv3d(2 * dim, 3),
        nn.GELU(),
        nn.Conv3d(2 * dim, dim, 1),
    )


class _GatedDepthwise(nn.Module):
    """``x * sigmoid(depthwise3x3x3(x))``: a conv ablation of shuffle attention."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = DepthwiseConv3d(channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.conv(x))


def _shuffle(channels: int, groups: int = 4) -> nn.Module:
    while groups > 1 and channels % (2 * groups):
        groups //= 2
    return ShuffleAttention3d(channels, groups)


# name -> builder. A conv block builder takes (in, out, kernel, stride, norm, act, drop_path,
# expand_ratio, se); a token mixer or skip attention is built as ``cls(channels)``, and there a
# dotted path to your own class (``my_blocks.MyMixer``) works as well as a name.
CONV_BLOCKS: dict[str, ConvFactory] = {"conv": _dense, "resconv": _residual, "mbconv": _mbconv}
TOKEN_MIXERS: dict[str, Callable[[int], nn.Module] | None] = {
    "mhsa": MultiHeadSelfAttention3d,  # num_heads and window_size are bound below
    "identity": None,  # the block skips the branch
    "se": SqueezeExcitation3d,
    "conv": _conv_mixer,  # pointwise 2x expand, depthwise 3x3x3, project: ~attention's compute
}
SKIP_ATTENTIONS: dict[str, Callable[[int], nn.Module]] = {
    "shuffle": _shuffle,
    "identity": lambda channels: nn.Identity(),
    "se": SqueezeExcitation3d,
    "conv": _GatedDepthwise,
}
CONV_KINDS, ATTENTION_KINDS, SHUFFLE_KINDS = (
    tuple(CONV_BLOCKS),
    tuple(TOKEN_MIXERS),
    tuple(SKIP_ATTENTIONS),
)


def _resolve(kind: str, registry: dict, what: str):
    """A registry entry by name, or the class a dotted path names."""
    if "." in str(kind):
        from hybrid_unet.config.validate import import_failure, locate

        why = import_failure(str(kind))  # without Hydra's error logging and multi-line message
        if why is not None:
            raise ValueError(f"model.{what} {kind!r}: cannot import it{why}")
        return locate(str(kind))
    return registry[lookup(kind, tuple(registry), what)]


def make_conv_block(
    kind: str,
    in_channels: int,
    out_channels: int,
    kernel_size: Sequence[int],
    stride: Sequence[int],
    norm: NormFactory,
    act: ActFactory,
    drop_path: float = 0.0,
    expand_ratio: float = 4.0,
    se: bool = True,
) -> nn.Module:
    """Build one conv block: ``conv`` (dense ConvNormAct), ``resconv`` or ``mbconv``.

    ``se`` switches the squeeze-excitation inside MBConv (an attention ablation).
    """
    build = CONV_BLOCKS[lookup(kind, CONV_KINDS, "conv block")]
    return build(in_channels, out_channels, kernel_size, stride, norm, act, drop_path,
                 expand_ratio, se)  # fmt: skip


def token_mixer_factory(
    kind: str, num_heads: int = 4, window_size: int | Sequence[int] | None = None
) -> Callable[[int], nn.Module] | None:
    """Resolve the attention component of a hybrid block (or an ablation of it) to a factory:
    a name of :data:`TOKEN_MIXERS` or a dotted path to a class built as ``cls(dim)``.

    Returns:
        ``factory(dim) -> nn.Module``, or None for ``identity``.
    """
    factory = _resolve(kind, TOKEN_MIXERS, "attention")
    if factory is MultiHeadSelfAttention3d:
        return partial(factory, num_heads=num_heads, window_size=window_size)
    return factory


def conv_block_factory(kind: str, expand_ratio: float = 4.0, se: bool = True) -> ConvFactory:
    """Resolve a conv block kind once; the factory takes ``make_conv_block``'s other args."""
    kind = lookup(kind, CONV_KINDS, "conv block")
    return partial(make_conv_block, kind, expand_ratio=expand_ratio, se=se)


def make_skip_attention(kind: str, channels: int) -> nn.Module:
    """Attention on decoder features: a name of :data:`SKIP_ATTENTIONS` (``shuffle``,
    ``identity``, ``se``, ``conv``: gated depthwise) or a dotted path to a class built as
    ``cls(channels)``."""
    return _resolve(kind, SKIP_ATTENTIONS, "shuffle_attention")(channels)


_MBCONV = partial(make_conv_block, "mbconv")


class HybridEncoderBlock(nn.Module):
    """Conv block, then ``x + pos(x)``, ``x + attn(norm(x))``, ``x + mlp(norm(x))``.

    The position encoding is a depthwise 3x3x3 conv (conditional position encoding), so any
    input size works without interpolating tables.

    Args:
        in_channels: input channels C.
        out_channels: output channels (divisible by the attention heads).
        kernel_size: per-axis kernel of the conv path.
        stride: per-axis stride of the conv path.
        norm: norm factory for the conv path.
        act: activation factory for the conv path.
        conv_layer: factory ``(in, out, kernel, stride, norm, act, drop_path) -> nn.Module``
            for the conv path (see :func:`conv_block_factory`).
        attn_layer: factory ``(dim) -> nn.Module`` for the token mixer, or None to skip the
            branch (see :func:`token_mixer_factory`).
        mlp_ratio: hidden width of the MLP relative to ``out_channels``.
        drop_path: stochastic depth of the residual branches.

    Shape: ``(B, C, D, H, W) -> (B, out_channels, D/sd, H/sh, W/sw)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int] = 3,
        stride: int | Sequence[int] = 1,
        norm: NormFactory = nn.InstanceNorm3d,
        act: ActFactory = nn.GELU,
        conv_layer: ConvFactory = _MBCONV,
        attn_layer: Callable[[int], nn.Module] | None = MultiHeadSelfAttention3d,
        mlp_ratio: float = 2.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be > 0, got {mlp_ratio}")
        kernel = triple(kernel_size, "kernel_size")
        stride3 = triple(stride, "stride")
        self.conv = conv_layer(
            in_channels, out_channels, kernel, stride3, norm=norm, act=act, drop_path=drop_path
        )
        self.pos_embed = DepthwiseConv3d(out_channels, kernel)
        self.attn = attn_layer(out_channels) if attn_layer is not None else None
        self.norm1 = LayerNorm3d(out_channels) if self.attn is not None else None
        hidden = max(1, round(out_channels * mlp_ratio))
        self.norm2 = LayerNorm3d(out_channels)
        self.mlp = nn.Sequential(
            nn.Conv3d(out_channels, hidden, 1), nn.GELU(), nn.Conv3d(hidden, out_channels, 1)
        )
        self.drop_path = DropPath(drop_path)

    def zero_init_last(self) -> None:
        """Zero the last layer of each residual branch: the block starts as ``x + pos(x)``."""
        if hasattr(self.conv, "zero_init_last"):
            self.conv.zero_init_last()
        last_layers = [self.mlp[-1]]
        if isinstance(self.attn, MultiHeadSelfAttention3d):
            last_layers.append(self.attn.proj)
        for layer in last_layers:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        x = x + self.pos_embed(x)
        if self.attn is not None:
            x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))

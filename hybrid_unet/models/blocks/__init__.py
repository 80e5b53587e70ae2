"""Public layer library: conv, attention and hybrid blocks for ``(B, C, D, H, W)`` volumes."""

from hybrid_unet.models.blocks.attention import (
    MultiHeadSelfAttention3d,
    ShuffleAttention3d,
    SqueezeExcitation3d,
)
from hybrid_unet.models.blocks.conv import (
    ConvNormAct3d,
    DepthwiseSeparableConv3d,
    MBConv3d,
    ResidualConvBlock3d,
)
from hybrid_unet.models.blocks.hybrid import HybridEncoderBlock
from hybrid_unet.models.blocks.layers import DropPath, LayerNorm3d, get_act, get_norm

__all__ = [
    "ConvNormAct3d",
    "DepthwiseSeparableConv3d",
    "DropPath",
    "HybridEncoderBlock",
    "LayerNorm3d",
    "MBConv3d",
    "MultiHeadSelfAttention3d",
    "ResidualConvBlock3d",
    "ShuffleAttention3d",
    "SqueezeExcitation3d",
    "get_act",
    "get_norm",
]

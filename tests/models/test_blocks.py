from __future__ import annotations

import pytest
import torch

from hybrid_unet.models.blocks import (
    ConvNormAct3d,
    DepthwiseSeparableConv3d,
    DropPath,
    HybridEncoderBlock,
    MBConv3d,
    MultiHeadSelfAttention3d,
    ResidualConvBlock3d,
    ShuffleAttention3d,
    SqueezeExcitation3d,
    get_act,
    get_norm,
)
from hybrid_unet.models.blocks.hybrid import ATTENTION_KINDS, token_mixer_factory

NORM, ACT = get_norm("instance"), get_act("leakyrelu")
ANISO = (1, 8, 20, 28, 36)  # (B, C, D, H, W)


def out_size(n: int, s: int) -> int:
    return (n + s - 1) // s


BLOCKS = {
    "convnormact": lambda s, k: ConvNormAct3d(8, 12, k, s, NORM, ACT),
    "dsconv": lambda s, k: DepthwiseSeparableConv3d(8, 12, k, s, NORM, ACT),
    "mbconv": lambda s, k: MBConv3d(8, 12, k, s, 2.0, NORM, ACT, SqueezeExcitation3d),
    "mbconv_res": lambda s, k: MBConv3d(8, 8, k, 1, 2.0, NORM, ACT, SqueezeExcitation3d, 0.1),
    "hybrid": lambda s, k: HybridEncoderBlock(
        8, 12, k, s, NORM, ACT, attn_layer=token_mixer_factory("mhsa", 2, (2, 4, 4))
    ),
}


@pytest.mark.parametrize("name", sorted(BLOCKS))
@pytest.mark.parametrize(
    ("shape", "stride", "kernel"),
    [
        ((1, 8, 5, 7, 9), (1, 1, 1), (3, 3, 3)),  # odd sizes
        ((1, 8, 5, 7, 9), (2, 2, 2), (3, 3, 3)),  # odd sizes, strided
        ((1, 8, 4, 10, 14), (1, 2, 2), (1, 3, 3)),  # anisotropic
    ],
)
def test_block_shape_and_grads(name, shape, stride, kernel, assert_all_grads):
    block = BLOCKS[name](stride, kernel)
    if name == "mbconv_res":
        stride = (1, 1, 1)
    x = torch.randn(*shape)
    y = block(x)
    c_out = 8 if name == "mbconv_res" else 12
    assert y.shape == (1, c_out, *(out_size(n, s) for n, s in zip(shape[2:], stride, strict=True)))
    (y * torch.randn_like(y)).sum().backward()
    assert_all_grads(block)


def test_anisotropic_reference_size():
    block = MBConv3d(8, 16, (1, 3, 3), (1, 2, 2), 2.0, NORM, ACT, SqueezeExcitation3d)
    assert block(torch.randn(*ANISO)).shape == (1, 16, 20, 14, 18)


@pytest.mark.parametrize(
    "module", [SqueezeExcitation3d(8), ShuffleAttention3d(8, 2), MultiHeadSelfAttention3d(8, 2)]
)
def test_attention_keeps_shape_and_grads(module, assert_all_grads):
    x = torch.randn(2, 8, 3, 5, 7, requires_grad=True)
    y = module(x)
    assert y.shape == x.shape
    (y * torch.randn_like(y)).sum().backward()
    assert_all_grads(module)
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("window", [None, 2, (1, 4, 4), (8, 8, 8)])
def test_sdpa_matches_reference(window):
    attn = MultiHeadSelfAttention3d(16, 4, window_size=window).eval()
    x = torch.randn(2, 16, 3, 5, 6)
    fused = attn(x)
    attn.fused = False
    torch.testing.assert_close(fused, attn(x), rtol=1e-5, atol=1e-5)


def test_windowed_attention_is_local():
    attn = MultiHeadSelfAttention3d(8, 2, window_size=(1, 2, 2)).eval()
    x = torch.randn(1, 8, 2, 4, 4)
    y0 = attn(x)
    x2 = x.clone()
    x2[:, :, 1, 2:, 2:] += 1.0  # a different window
    torch.testing.assert_close(attn(x2)[:, :, 0], y0[:, :, 0])


def test_shuffle_attention_validates():
    with pytest.raises(ValueError, match="channels=6"):
        ShuffleAttention3d(6, 2)


def test_mhsa_validates_heads():
    with pytest.raises(ValueError, match="num_heads=3"):
        MultiHeadSelfAttention3d(8, 3)


@pytest.mark.parametrize("kind", ATTENTION_KINDS)
def test_token_mixer_ablations(kind):
    block = HybridEncoderBlock(8, 8, 3, 1, NORM, ACT, attn_layer=token_mixer_factory(kind, 2))
    assert block(torch.randn(1, 8, 3, 4, 5)).shape == (1, 8, 3, 4, 5)
    assert (block.attn is None) == (kind == "identity")


def test_unknown_names_suggest_close_matches():
    with pytest.raises(ValueError, match="Did you mean 'instance'"):
        get_norm("instnace")
    with pytest.raises(ValueError, match="attention 'msha'"):
        token_mixer_factory("msha")


def test_drop_path():
    dp = DropPath(0.5)
    x = torch.ones(64, 2, 2, 2, 2)
    assert torch.equal(dp.eval()(x), x)
    y = dp.train()(x)
    assert set(y.unique().tolist()) <= {0.0, 2.0}
    with pytest.raises(ValueError, match=r"1\.5"):
        DropPath(1.5)


def test_padded_window_equals_attention_on_the_crop():
    attn = MultiHeadSelfAttention3d(8, 2, window_size=(2, 4, 4)).eval()
    x = torch.randn(2, 8, 3, 5, 6)
    corner = attn(x)[:, :, 2:, 4:, 4:]  # a window cut by the border: 1 x 1 x 2 valid voxels
    attn.window_size = None
    torch.testing.assert_close(corner, attn(x[:, :, 2:, 4:, 4:]), rtol=1e-5, atol=1e-5)


def test_zero_init_last_starts_residual_blocks_as_identity():
    x = torch.randn(2, 8, 4, 6, 4)
    mbconv = MBConv3d(8, 8, 3, 1, 2.0, NORM, ACT, SqueezeExcitation3d)
    mbconv.zero_init_last()
    torch.testing.assert_close(mbconv(x), x)
    res = ResidualConvBlock3d(8, 8, 3, 1, NORM, ACT)
    res.zero_init_last()
    torch.testing.assert_close(res(x), ACT()(x.clone()))
    for kind in ("identity", "mhsa"):
        block = HybridEncoderBlock(8, 8, 3, 1, NORM, ACT, attn_layer=token_mixer_factory(kind, 2))
        block.zero_init_last()  # its MBConv too
        torch.testing.assert_close(block(x), x + block.pos_embed(x))


def test_zero_init_last_leaves_the_branches_trainable():
    block = HybridEncoderBlock(8, 8, 3, 1, NORM, ACT, attn_layer=token_mixer_factory("mhsa", 2))
    block.zero_init_last()
    y = block(torch.randn(2, 8, 4, 6, 4))
    (y * torch.randn_like(y)).sum().backward()
    for p in (block.conv.project[1].weight, block.mlp[-1].weight, block.attn.proj.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_zero_init_last_leaves_a_strided_mbconv_alone():
    block = MBConv3d(8, 16, 3, 2, 2.0, NORM, ACT)
    block.zero_init_last()
    assert torch.all(block.project[1].weight == 1)


def test_squeeze_excitation_scales_each_channel_by_a_gate_between_0_and_1():
    se = SqueezeExcitation3d(8)
    torch.nn.init.normal_(se.fc2.bias, std=3.0)  # gates spread over (0, 1), not all near 0.5
    x = torch.randn(2, 8, 3, 4, 5)
    gate = se(x) / x
    per_channel = gate.flatten(2)
    torch.testing.assert_close(per_channel, per_channel[..., :1].expand_as(per_channel))
    assert (per_channel > 0).all() and (per_channel < 1).all()
    assert per_channel[..., 0].std() > 0.1  # the channels get different gates


def test_shuffle_attention_at_init_gates_by_sigmoid_1_and_interleaves_the_halves():
    """Zero weights and unit biases: every gate is sigmoid(1); then SA-Net's channel shuffle
    with two groups interleaves the first and the second half of the channels."""
    x = torch.randn(2, 8, 3, 4, 5)
    y = ShuffleAttention3d(8, groups=2)(x)
    torch.testing.assert_close(y, x[:, [0, 4, 1, 5, 2, 6, 3, 7]] * torch.sigmoid(torch.ones(())))

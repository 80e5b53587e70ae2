from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from hybrid_unet.engine.build import instantiate_model
from hybrid_unet.models.blocks.hybrid import ATTENTION_KINDS, SHUFFLE_KINDS
from hybrid_unet.models.hybrid_unet import HybridUNet

ANISO = [[1, 1, 1], [1, 2, 2], [2, 2, 2]]


def tiny(**kwargs) -> HybridUNet:
    args = dict(
        in_channels=2,
        num_classes=3,
        features=[8, 16, 16],
        strides=ANISO,
        depths=[1, 1, 1],
        attention_stages=[2],
        num_heads=2,
        kernel_sizes=[[1, 3, 3], 3, 3],
        shuffle_attention="shuffle",
    )
    args.update(kwargs)
    return HybridUNet(**args)


def test_total_stride_and_deep_supervision_scales():
    model = tiny()
    assert model.total_stride == (2, 4, 4)
    x = torch.randn(2, 2, 4, 12, 8)
    outs = model.train()(x)
    assert [tuple(o.shape) for o in outs] == [(2, 3, 4, 12, 8), (2, 3, 4, 6, 4)]
    assert model.eval()(x).shape == (2, 3, 4, 12, 8)
    model.deep_supervision = False
    assert model.train()(x).shape == (2, 3, 4, 12, 8)


def test_reference_anisotropic_patch():
    model = tiny(in_channels=1, strides=[[1, 1, 1], [1, 2, 2], [1, 2, 2]])
    outs = model(torch.randn(1, 1, 20, 28, 36))
    assert [tuple(o.shape[2:]) for o in outs] == [(20, 28, 36), (20, 14, 18)]


def test_gradients_reach_every_parameter(assert_all_grads, sum_outputs):
    model = tiny(drop_path=0.1, dropout=0.1)
    sum_outputs(model(torch.randn(2, 2, 4, 8, 8))).backward()
    assert_all_grads(model)


def test_state_dict_round_trip():
    model = tiny(norm="batch").eval()
    x = torch.randn(1, 2, 4, 8, 8)
    clone = tiny(norm="batch").eval()
    clone.load_state_dict(model.state_dict())
    torch.testing.assert_close(clone(x), model(x))


@pytest.mark.parametrize("size", [(2, 8, 4), (4, 8, 12), (6, 20, 4)])
def test_divisible_sizes_accepted(size):
    assert tiny().eval()(torch.randn(1, 2, *size)).shape[2:] == size


@pytest.mark.parametrize("size", [(3, 4, 4), (2, 6, 4), (2, 4, 10)])
def test_indivisible_sizes_refused(size):
    with pytest.raises(ValueError, match=r"total stride \(2, 4, 4\)"):
        tiny()(torch.randn(1, 2, *size))


def test_wrong_channels_refused():
    with pytest.raises(ValueError, match="expected input"):
        tiny()(torch.randn(1, 3, 4, 8, 8))


def test_bf16_autocast_finite():
    model = tiny()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outs = model(torch.randn(2, 2, 4, 8, 8))
    assert all(torch.isfinite(o.float()).all() for o in outs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"strides": [[1, 1, 1], [2, 2, 2]]}, "strides has 2 stages"),
        ({"strides": [[1, 1, 1], [1, 2], [2, 2, 2]]}, r"strides\[1\]"),
        ({"kernel_sizes": [2, 3, 3]}, "odd"),
        ({"depths": [1, 1]}, "depths"),
        ({"attention_stages": [3]}, r"attention_stages \[3\]"),
        ({"num_heads": 3}, "num_heads=3"),
        ({"dropout": 1.0}, "dropout"),
        ({"drop_path": -0.1}, "drop_path"),
        ({"expand_ratio": 0.5}, "expand_ratio"),
        ({"mlp_ratio": 0}, "mlp_ratio"),
        ({"norm": "btach"}, "Did you mean 'batch'"),
        ({"act": "gleu"}, "gelu"),
        ({"attention": "mhs"}, "mhsa"),
        ({"shuffle_attention": "shufle"}, "shuffle"),
        ({"stage_blocks": ["conv", "conv", "mbconvv"]}, "mbconv"),
    ],
)
def test_constructor_validates(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tiny(**kwargs)


@pytest.mark.parametrize("attention", ["identity", "se", "conv"])
def test_num_heads_binds_only_self_attention(attention):
    # Widths the heads do not divide were refused even with no self-attention built.
    assert tiny(num_heads=3, attention=attention)(torch.randn(1, 2, 4, 12, 8))[0].shape[1] == 3


@pytest.mark.parametrize("attention", ATTENTION_KINDS)
@pytest.mark.parametrize("shuffle", SHUFFLE_KINDS)
def test_ablation_switches(attention, shuffle):
    model = tiny(attention=attention, shuffle_attention=shuffle).eval()
    assert model(torch.randn(1, 2, 2, 8, 4)).shape == (1, 3, 2, 8, 4)


def test_attention_slots_take_a_dotted_path_to_a_users_class():
    """A new token mixer or decoder attention is a class ``cls(channels)`` and a config value:
    no edit of the package."""
    se = "hybrid_unet.models.blocks.attention.SqueezeExcitation3d"
    model = tiny(attention=se, shuffle_attention="torch.nn.Identity").eval()
    assert sum(type(m).__name__ == "SqueezeExcitation3d" for m in model.modules()) > 0
    assert model(torch.randn(1, 2, 2, 8, 4)).shape == (1, 3, 2, 8, 4)
    with pytest.raises(ValueError, match=r"attention 'my_blocks\.Nope': cannot import it"):
        tiny(attention="my_blocks.Nope")


def test_mbconv_se_switch():
    with_se = tiny(stage_blocks=["conv", "conv", "mbconv"])
    without = tiny(stage_blocks=["conv", "conv", "mbconv"], mbconv_se=False)
    n_se = sum(1 for m in with_se.modules() if type(m).__name__ == "SqueezeExcitation3d")
    assert n_se > 0
    assert not any(type(m).__name__ == "SqueezeExcitation3d" for m in without.modules())
    assert without(torch.randn(1, 2, 4, 8, 8))[0].shape == (1, 3, 4, 8, 8)


def test_zero_init_residual_zeroes_only_the_last_layers():
    torch.manual_seed(0)
    base = tiny(stage_blocks=["conv", "resconv", "mbconv"], depths=[1, 1, 2])
    torch.manual_seed(0)
    zeroed = tiny(stage_blocks=["conv", "resconv", "mbconv"], depths=[1, 1, 2],
                  zero_init_residual=True)  # fmt: skip
    changed = [
        name
        for (name, p), q in zip(base.named_parameters(), zeroed.parameters(), strict=True)
        if not torch.equal(p, q)
    ]
    assert changed and all(not q.any() for name, q in zeroed.named_parameters() if name in changed)
    # resconv's second norm; per hybrid block: the MBConv projection's norm, attention's output
    # projection and the MLP's last conv (weight and bias for the linear layers)
    assert len(changed) == 1 + 2 * (1 + 2 + 2)
    assert zeroed(torch.randn(1, 2, 4, 8, 8))[0].shape == (1, 3, 4, 8, 8)


@pytest.mark.parametrize("blocks", [["conv", "resconv", "mbconv"], ["mbconv"] * 3])
def test_stage_blocks_and_windows(blocks):
    model = tiny(stage_blocks=blocks, window_size=2, attention_stages=[1, 2])
    assert model(torch.randn(1, 2, 4, 8, 8))[0].shape == (1, 3, 4, 8, 8)


def test_activation_checkpointing_matches():
    torch.manual_seed(1)
    plain = tiny()
    ckpt = tiny(activation_checkpointing=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(1, 2, 4, 8, 8)
    for m in (plain, ckpt):
        m(x)[0].sum().backward()
    torch.testing.assert_close(ckpt(x)[0], plain(x)[0])
    for (n, p), q in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=n)


def test_traces_without_the_input_check():
    model = tiny(shuffle_attention="identity").eval()
    traced = torch.jit.trace(model, torch.randn(1, 2, 2, 8, 4))
    assert traced(torch.randn(1, 2, 4, 8, 8)).shape == (1, 3, 4, 8, 8)


def test_default_config_instantiates():
    cfg = OmegaConf.load(Path(__file__).parents[2] / "conf/model/hybrid_unet.yaml")
    cfg.in_channels, cfg.num_classes = 1, 3
    model = instantiate_model(OmegaConf.to_container(cfg))
    assert isinstance(model, HybridUNet)
    patch = (40, 56, 40)
    assert all(p % s == 0 for p, s in zip(patch, model.total_stride, strict=True))
    assert sum(p.numel() for p in model.parameters()) < 5_600_000  # nnU-Net's plan


@pytest.mark.slow  # dynamo tracing takes ~15 s on the shared CPU
def test_compiles_without_graph_breaks():
    model = tiny()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    x = torch.randn(1, 2, 4, 8, 8)
    torch.testing.assert_close(compiled(x)[0], model(x)[0])


def test_channels_last_3d_matches():
    model = tiny().eval()
    x = torch.randn(1, 2, 4, 8, 8)
    ref = model(x)
    model_cl = model.to(memory_format=torch.channels_last_3d)
    out = model_cl(x.contiguous(memory_format=torch.channels_last_3d))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_channels_last_flag_builds_channels_last_weights():
    """``channels_last_3d: true`` is honoured where every model is built (train and predict)."""
    node = {"_target_": "hybrid_unet.models.baselines.PlainUNet", "in_channels": 1,
            "num_classes": 3, "features": [4, 8], "strides": [[1, 1, 1], [2, 2, 2]],
            "deep_supervision": False}  # fmt: skip
    torch.manual_seed(0)
    plain = instantiate_model(node).eval()
    torch.manual_seed(0)
    fast = instantiate_model({**node, "channels_last_3d": True}).eval()
    conv_weights = [p for p in fast.parameters() if p.dim() == 5]
    assert all(p.is_contiguous(memory_format=torch.channels_last_3d) for p in conv_weights)
    assert any(not p.is_contiguous() for p in conv_weights)
    x = torch.randn(2, 1, 8, 8, 8)
    torch.testing.assert_close(fast(x), plain(x), rtol=1e-4, atol=1e-4)


def test_learns_a_tiny_phantom():
    """Sanity check of the whole network: it fits two blobs within a few dozen steps."""
    x = torch.randn(2, 2, 4, 16, 16) * 0.1
    y = torch.zeros(2, 4, 16, 16, dtype=torch.long)
    y[:, :, 2:7, 2:7] = 1
    y[:, :, 9:14, 8:15] = 2
    x[:, 0] += (y == 1).float()
    x[:, 1] += (y == 2).float()
    model = tiny()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(30):
        outs = model(x)
        loss = torch.nn.functional.cross_entropy(outs[0], y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    pred = model.eval()(x).argmax(1)
    for k in (1, 2):
        dice = 2 * ((pred == k) & (y == k)).sum() / ((pred == k).sum() + (y == k).sum())
        assert dice > 0.9, (k, float(dice))

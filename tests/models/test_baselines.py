from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from hybrid_unet.engine.build import instantiate_model
from hybrid_unet.models.baselines import (
    DynUNetNet,
    PlainUNet,
    ResEncUNet,
    SegResNetNet,
    SwinUNETRNet,
)
from hybrid_unet.models.report import format_report, model_report
from tests.helpers import compose_config

CONF = Path(__file__).resolve().parents[2] / "conf" / "model"
STRIDES = [[1, 1, 1], [1, 2, 2], [2, 2, 2]]


@pytest.mark.parametrize("cls", [PlainUNet, ResEncUNet])
def test_plain_and_resenc_contract(cls, assert_all_grads, sum_outputs):
    model = cls(2, 3, [4, 8, 8], STRIDES, kernel_sizes=[[1, 3, 3], 3, 3], n_conv_per_stage=2)
    assert model.total_stride == (2, 4, 4)
    x = torch.randn(2, 2, 4, 8, 12)
    outs = model.train()(x)
    assert [tuple(o.shape) for o in outs] == [(2, 3, 4, 8, 12), (2, 3, 4, 4, 6)]
    sum_outputs(outs).backward()
    assert_all_grads(model)
    assert model.eval()(x).shape == (2, 3, 4, 8, 12)
    with pytest.raises(ValueError, match="total stride"):
        model(torch.randn(1, 2, 4, 8, 10))


def test_plain_validates():
    with pytest.raises(ValueError, match="n_conv_per_stage"):
        PlainUNet(1, 2, [4, 8], [1, 2], n_conv_per_stage=0)
    with pytest.raises(ValueError, match="Did you mean 'group'"):
        PlainUNet(1, 2, [4, 8], [1, 2], norm="grop")


def test_dynunet_deep_supervision_at_native_scales():
    model = DynUNetNet(1, 3, [4, 8, 8, 8], [1, 2, 2, 2])
    assert model.total_stride == (8, 8, 8)
    outs = model.train()(torch.randn(1, 1, 8, 16, 8))
    assert [tuple(o.shape[2:]) for o in outs] == [(8, 16, 8), (4, 8, 4), (2, 4, 2)]
    assert model.eval()(torch.randn(1, 1, 8, 16, 8)).shape == (1, 3, 8, 16, 8)


def test_segresnet_wrapper():
    model = SegResNetNet(1, 3, init_filters=8, blocks_down=[1, 1, 1], blocks_up=[1, 1])
    assert model.total_stride == (4, 4, 4)
    assert model(torch.randn(1, 1, 8, 12, 8)).shape == (1, 3, 8, 12, 8)
    with pytest.raises(ValueError, match="blocks_up"):
        SegResNetNet(1, 3, blocks_down=[1, 1], blocks_up=[1, 1])


def test_swin_unetr_wrapper():
    model = SwinUNETRNet(1, 2, feature_size=12, depths=(1, 1, 1, 1)).eval()
    assert model.total_stride == (32, 32, 32)
    with torch.no_grad():
        assert model(torch.randn(1, 1, 64, 32, 32)).shape == (1, 2, 64, 32, 32)
    with pytest.raises(ValueError, match="total stride"):
        model(torch.randn(1, 1, 40, 56, 40))
    with pytest.raises(ValueError, match="feature_size"):
        SwinUNETRNet(1, 2, feature_size=16)


@pytest.mark.parametrize("path", sorted(CONF.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_model_config_instantiates(path):
    cfg = compose_config([f"model={path.stem}", "data.num_classes=3"])  # options may extend others
    model = instantiate_model(OmegaConf.to_container(cfg.model, resolve=True))
    assert model.in_channels == 1 and model.num_classes == 3
    assert len(model.total_stride) == 3


def test_model_report():
    model = PlainUNet(1, 3, [4, 8], [1, 2])
    report = model_report(model, (4, 8, 8), batch_size=2)
    assert report["params"] == sum(p.numel() for p in model.parameters())
    assert sum(report["params_per_stage"].values()) == report["params"]
    assert report["flops_per_patch"] > 0 and report["activation_bytes"] > 0
    assert "total" in format_report(report)


def test_model_config_applies_the_options_defaults_list():
    """``hybrid_unet_small`` is ``hybrid_unet`` plus two keys, through Hydra's ``defaults:``;
    the benchmark scripts read the option as the train command composes it."""
    from hydra.utils import instantiate

    from hybrid_unet.models.report import model_config

    node = model_config("hybrid_unet_small", in_channels=1, num_classes=3)
    assert node["_target_"].endswith("HybridUNet") and node["features"] == [8, 16, 32, 64]
    assert node["attention"] == model_config("hybrid_unet")["attention"]  # inherited
    model = instantiate(node)
    assert model(torch.zeros(1, 1, 16, 16, 16))[0].shape[:2] == (1, 3)

"""Weight-decay exemptions for AdamW and SGD; warmup-cosine and reduce-on-plateau shapes."""

from __future__ import annotations

import csv
import itertools
import math

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from hybrid_unet.engine.build import build_optimizer, param_groups
from hybrid_unet.engine.schedules import warmup_cosine, warmup_cosine_factor
from tests.helpers import REPO, compose_config, train_in_process


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 4, 3)
        self.norm = torch.nn.InstanceNorm3d(4, affine=True)
        self.pos = torch.nn.Parameter(torch.zeros(1, 4, 2, 2))
        self.head = torch.nn.Linear(4, 2)

    def no_weight_decay(self) -> set[str]:
        return {"pos"}


def test_arguments_the_optimizer_refuses_name_the_optimizer_key():
    """``optimizer.betas=[0.9]`` was "config key '[1]': list index out of range"."""
    from hybrid_unet.config.errors import ConfigError

    node = OmegaConf.to_container(OmegaConf.load(REPO / "conf/optimizer/adamw.yaml"))
    with pytest.raises(ConfigError, match=r"config key 'optimizer': torch.optim.AdamW refuses"):
        build_optimizer({"optimizer": {**node, "betas": [0.9]}}, _Net(), torch.nn.Module())
    opt = build_optimizer({"optimizer": {**node, "betas": [0.8, 0.9]}}, _Net(), torch.nn.Module())
    assert list(opt.param_groups[0]["betas"]) == [0.8, 0.9]


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_norms_biases_and_1d_params_are_not_decayed(name):
    cfg = {
        "optimizer": OmegaConf.to_container(OmegaConf.load(REPO / f"conf/optimizer/{name}.yaml"))
    }
    loss = torch.nn.Module()
    loss.log_vars = torch.nn.Parameter(torch.zeros(2))
    net = _Net()
    opt = build_optimizer(cfg, net, loss)
    decayed, exempt = opt.param_groups
    assert {id(p) for p in decayed["params"]} == {id(net.conv.weight), id(net.head.weight)}
    assert len(exempt["params"]) == 6 and exempt["weight_decay"] == 0.0
    assert decayed["weight_decay"] == cfg["optimizer"]["weight_decay"] > 0
    if name == "sgd":
        assert decayed["nesterov"] and exempt["nesterov"]


def test_every_parameter_of_the_hybrid_model_is_in_one_group():
    from hybrid_unet.engine.build import instantiate_model

    cfg = compose_config(["paths.output_dir=unused", "model.shuffle_attention=shuffle"])
    model = instantiate_model(OmegaConf.to_container(cfg, resolve=True)["model"])
    decayed, exempt = param_groups(model)
    assert len(decayed["params"]) + len(exempt["params"]) == len(list(model.parameters()))
    assert all(p.ndim > 1 for p in decayed["params"])
    # shuffle attention's gates: per-channel (1, C, 1, 1, 1) scales and shifts, not decayed
    gates = {id(p) for n, p in model.named_parameters() if n.endswith(("c_weight", "s_bias"))}
    assert gates and not gates & {id(p) for p in decayed["params"]}


def test_warmup_cosine_shape():
    assert warmup_cosine_factor(0, 100, 10) == pytest.approx(0.1)
    assert warmup_cosine_factor(10, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine_factor(55, 100, 10) == pytest.approx(0.5)
    assert warmup_cosine_factor(100, 100, 10, min_lr_ratio=0.1) == pytest.approx(0.1)
    node = OmegaConf.to_container(OmegaConf.load(REPO / "conf/scheduler/warmup_cosine.yaml"))
    node["total_steps"], node["warmup_steps"] = 20, 4
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = instantiate(node)(opt)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])  # linear warmup
    assert all(a > b for a, b in itertools.pairwise(lrs[4:]))  # then a falling cosine
    assert lrs[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 15 / 16)))
    with pytest.raises(ValueError, match="min_lr_ratio"):
        warmup_cosine(opt, total_steps=10, min_lr_ratio=2.0)


def test_plateau_halves_the_lr_when_the_monitored_metric_stalls(tmp_path):
    # A threshold no change can pass: every validation after the first is a stall.
    train_in_process(["scheduler=plateau", "scheduler.patience=0", "scheduler.threshold=10",
                      "scheduler.threshold_mode=abs", "trainer.max_epochs=5",
                      "trainer.steps_per_epoch=1", "data.max_val_cases=1"], tmp_path)  # fmt: skip
    with open(tmp_path / "metrics.csv") as f:
        lrs = [float(r["lr"]) for r in csv.DictReader(f)]
    # 2 warmup steps (TINY), then: counted, stall (halved), stall (halved again).
    assert lrs == pytest.approx([3e-3, 3e-3, 3e-3, 1.5e-3, 7.5e-4])

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _small_and_seeded():
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine is shared; the tests use tiny volumes
    yield
    torch.set_num_threads(threads)


def _assert_all_grads(module: torch.nn.Module) -> None:
    """Every parameter has a finite gradient that is not zero everywhere."""
    bad = []
    for name, p in module.named_parameters():
        if p.grad is None:
            bad.append(f"{name}: None")
        elif not torch.isfinite(p.grad).all():
            bad.append(f"{name}: not finite")
        elif not p.grad.abs().sum() > 0:
            bad.append(f"{name}: all zero")
    assert not bad, bad


def _sum_outputs(out) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out.float().sum()
    return sum(o.float().sum() for o in out)


@pytest.fixture
def assert_all_grads():
    return _assert_all_grads


@pytest.fixture
def sum_outputs():
    return _sum_outputs

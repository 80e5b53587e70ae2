"""scripts/benchmark_time_to_dice.py --budgets: the per-budget table and plot over seeds."""

from __future__ import annotations

import importlib.util

from tests.helpers import REPO

_spec = importlib.util.spec_from_file_location(
    "time_to_dice", REPO / "scripts" / "benchmark_time_to_dice.py"
)
time_to_dice = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(time_to_dice)

ROWS = [
    {"arm": "plain", "budget_min": 1.0, "seed": 1, "mean_dice": 0.80},
    {"arm": "plain", "budget_min": 1.0, "seed": 2, "mean_dice": 0.84},
    {"arm": "hybrid", "budget_min": 1.0, "seed": 1, "mean_dice": 0.83},
    {"arm": "hybrid", "budget_min": 1.0, "seed": 2, "mean_dice": 0.83},
    {"arm": "plain", "budget_min": 2.5, "seed": 1, "mean_dice": 0.85},
    {"arm": "hybrid", "budget_min": 2.5, "seed": 1, "mean_dice": 0.84},
]


def test_budget_table_averages_seeds_and_differs_from_the_first_arm():
    lines = time_to_dice.budget_table(ROWS, ["plain", "hybrid"]).splitlines()
    assert lines[0] == "| budget min | plain | hybrid | difference to plain |"
    assert lines[2] == "| 1 | 0.8200 | 0.8300 | +0.0100 |"
    assert lines[3] == "| 2.5 | 0.8500 | 0.8400 | -0.0100 |"


def test_budget_plot_is_written(tmp_path):
    out = tmp_path / "budgets.png"
    if importlib.util.find_spec("matplotlib") is None:
        assert time_to_dice.plot_budgets(ROWS, ["plain", "hybrid"], out) is False
    else:
        assert time_to_dice.plot_budgets(ROWS, ["plain", "hybrid"], out) is True
        assert out.stat().st_size > 0

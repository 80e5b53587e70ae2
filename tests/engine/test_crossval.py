"""Cross-validation summary over fold runs, checked against hand-computed statistics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from hybrid_unet import crossval


def _fold_run(root: Path, fold: int, rows: list[str], seed: int = 42) -> Path:
    run = root / f"{fold}_{seed}"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(f"seed: {seed}\ndata:\n  fold: {fold}\n")
    (run / "validation_cases.csv").write_text("case,dice_1,dice_2\n" + "\n".join(rows) + "\n")
    return run


def test_summary_pools_cases_over_folds(tmp_path, capsys):
    _fold_run(tmp_path, 0, ["a,0.8,0.6", "b,0.9,"])  # b: class 2 empty in both -> NaN
    _fold_run(tmp_path, 1, ["c,0.7,0.8"])
    assert crossval.main([str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "crossval_summary.json").read_text())
    d1 = summary["per_class"]["dice_1"]
    assert d1["mean"] == pytest.approx(0.8) and d1["sd"] == pytest.approx(0.1) and d1["n"] == 3
    d2 = summary["per_class"]["dice_2"]
    assert d2["mean"] == pytest.approx(0.7) and d2["n"] == 2  # the NaN is left out
    assert summary["mean_over_classes"]["mean_dice"] == pytest.approx(0.75)
    # fold 0: class 1 mean 0.85, class 2 mean 0.6 -> 0.725; fold 1: (0.7 + 0.8) / 2
    assert summary["mean_dice_per_fold"] == pytest.approx({"0": 0.725, "1": 0.75})
    assert summary["mean_dice_fold_sd"] == pytest.approx(math.sqrt(2) * 0.0125)
    cases = (tmp_path / "crossval_cases.csv").read_text().splitlines()
    assert cases[0] == "case,dice_1,dice_2,fold,seed" and len(cases) == 4
    assert "0.800 +- 0.100" in capsys.readouterr().out


def test_folds_of_the_split_without_a_run_are_warned_about(tmp_path, capsys):
    for fold in (0, 2):
        run = _fold_run(tmp_path, fold, [f"c{fold},0.8,0.6"])
        config = run / ".hydra" / "config.yaml"
        config.write_text(config.read_text() + "  num_folds: 5\n")
    assert crossval.main([str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "crossval_summary.json").read_text())
    assert summary["missing_folds"] == {"42": [1, 3, 4]}
    assert "warning: seed 42: no run of fold(s) 1, 3, 4" in capsys.readouterr().err


def test_seed_repeats_of_a_fold_are_summarised_per_seed(tmp_path):
    _fold_run(tmp_path, 0, ["a,0.8,0.6", "b,0.9,0.7"], seed=1)
    _fold_run(tmp_path, 0, ["a,0.7,0.6", "b,0.8,0.5"], seed=2)
    assert crossval.main([str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "crossval_summary.json").read_text())
    assert summary["mean_dice_per_seed"] == pytest.approx({"1": 0.75, "2": 0.65})
    assert summary["mean_dice_seed_sd"] == pytest.approx(math.sqrt(2) * 0.05)
    assert summary["per_class"]["dice_1"]["n"] == 4


def test_a_case_in_two_folds_is_refused(tmp_path, capsys):
    _fold_run(tmp_path, 0, ["a,0.8,0.6"])
    _fold_run(tmp_path, 1, ["a,0.7,0.8"])
    assert crossval.main([str(tmp_path)]) == 2
    assert "case a is validated in fold 0 and fold 1" in capsys.readouterr().err


def test_no_fold_tables_is_a_clear_error(tmp_path, capsys):
    assert crossval.main([str(tmp_path)]) == 2
    assert "no validation_cases.csv" in capsys.readouterr().err
    assert crossval.main([str(tmp_path / "runs" / "cv6")]) == 2  # a typo, not unfinished runs
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'runs' / 'cv6'}: no such folder"


def test_seed_repeats_share_the_fold_split(tmp_path):
    from hybrid_unet.config.validate import check_config
    from hybrid_unet.engine.build import build_data
    from tests.helpers import TINY, compose_config

    def val_names(*overrides):
        cfg = check_config(compose_config([*TINY, "paths.output_dir=/tmp", *overrides]))
        run_dir = tmp_path / str(len(list(tmp_path.iterdir())))
        run_dir.mkdir()
        return build_data(cfg, run_dir).val_names

    first = val_names("seed=1")
    assert first == val_names("seed=2")
    assert first != val_names("seed=1", "data.split_seed=7")


def test_train_on_all_trains_on_every_case_and_stays_out_of_crossval(tmp_path, capsys):
    from hybrid_unet.config.validate import check_config
    from hybrid_unet.engine.build import build_data
    from tests.helpers import TINY, compose_config

    def split(*overrides):
        cfg = check_config(compose_config([*TINY, "paths.output_dir=/tmp", *overrides]))
        run_dir = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        run_dir.mkdir()
        return build_data(cfg, run_dir)

    fold, everything = split(), split("data.train_on_all=true")
    assert sorted(everything.train_names) == sorted(fold.train_names + fold.val_names)
    assert everything.val_names == fold.val_names  # still scored, but they are training cases

    run = _fold_run(tmp_path / "cv", 0, ["a,0.8,0.6"])
    (run / ".hydra" / "config.yaml").write_text("seed: 1\ndata:\n  fold: 0\n  train_on_all: true\n")
    assert crossval.main([str(tmp_path / "cv")]) == 2
    assert "trained on all cases" in capsys.readouterr().err


def _one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err and not captured.out
    return lines[0]


@pytest.mark.parametrize("out", ["taken", "taken/cv"])
def test_out_on_a_file_is_refused(tmp_path, capsys, out):
    _fold_run(tmp_path / "runs", 0, ["a,0.8,0.6"])
    (tmp_path / "taken").write_text("keep")
    assert crossval.main([str(tmp_path / "runs"), "--out", str(tmp_path / out)]) == 2
    assert f"--out {tmp_path / out}" in _one_error_line(capsys)
    assert (tmp_path / "taken").read_text() == "keep"


def test_a_truncated_table_is_refused_naming_file_and_line(tmp_path, capsys):
    rows = [f"case_{i:03d}.nii.gz,0.81234567,0.7654321" for i in range(6)]
    run = _fold_run(tmp_path, 0, rows)
    table = run / "validation_cases.csv"
    table.write_bytes(table.read_bytes()[:110])  # `head -c 110`: the 3rd row loses a column
    _fold_run(tmp_path, 1, ["b,0.7,0.8"])
    assert crossval.main([str(tmp_path)]) == 2
    assert f"{table}: line 4 has 2 cells, the header 3" in _one_error_line(capsys)
    assert not list(tmp_path.glob("crossval_*"))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("case,dice_1,dice_2\na,0.8,0.6,0.1\n", "line 2 has 4 cells, the header 3"),
        ("case,dice_1,dice_2\na,0.8,x\n", "line 2: dice_2 'x' is not a number"),
        ("", "line 1 is not a header with a 'case' column"),
    ],
)
def test_a_malformed_table_is_refused(tmp_path, capsys, text, problem):
    run = _fold_run(tmp_path, 0, [])
    (run / "validation_cases.csv").write_text(text)
    assert crossval.main([str(tmp_path)]) == 2
    assert f"validation_cases.csv: {problem}" in _one_error_line(capsys)
    assert not list(tmp_path.glob("crossval_*"))


def test_usage_names_the_command_a_user_runs(capsys):
    """The usage line said ``crossval.py``, a command that does not exist outside the package."""
    with pytest.raises(SystemExit):
        crossval.main(["--help"])
    assert capsys.readouterr().out.startswith("usage: python -m hybrid_unet.crossval ")

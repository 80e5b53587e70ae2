"""Cross-validation summary: pool the per-case validation results of the fold runs.

    python -m hybrid_unet.train -m +experiment=hippocampus_6min data.fold=0,1,2,3,4
    python -m hybrid_unet.crossval runs/multirun/<run_name>

Every run writes ``validation_cases.csv`` (its validation cases, predicted at the end of
training, metrics per class) next to its checkpoints. This command finds those tables under
the given folders, checks that no case is validated by two folds of one seed and that no
(fold, seed) pair appears twice, and writes ``crossval_cases.csv`` (every case, with its fold
and seed) and ``crossval_summary.json``: per class and metric the mean and sample standard
deviation over all case predictions, and the mean Dice of each fold and of each seed with
their standard deviations. Seed repeats (``seed=0,1,2``) of one fold are summarised the same
way. It prints the summary as a Markdown table.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from hybrid_unet.atomic import atomic_write_json
from hybrid_unet.cli import output_dir_problem
from hybrid_unet.engine.validation import write_case_table
from hybrid_unet.metrics import aggregate

TABLE = "validation_cases.csv"


class CrossValError(ValueError):
    """The fold runs cannot be summarised (missing, duplicated or inconsistent)."""


def find_fold_runs(folders: list[Path]) -> list[Path]:
    """Run dirs holding a :data:`TABLE` under ``folders`` (a folder may itself be a run)."""
    missing = [str(f) for f in folders if not Path(f).is_dir()]
    if missing:
        raise CrossValError(f"{', '.join(missing)}: no such folder")
    runs = sorted({p.parent for folder in folders for p in Path(folder).rglob(TABLE)})
    if not runs:
        names = ", ".join(str(f) for f in folders)
        raise CrossValError(f"no {TABLE} under {names}: did the fold runs finish?")
    return runs


def _run_config(run: Path) -> DictConfig | None:
    config = run / ".hydra" / "config.yaml"
    return OmegaConf.load(config) if config.is_file() else None


def check_held_out(run: Path) -> None:
    """Refuse a run whose validation cases were training cases (``data.train_on_all``)."""
    cfg = _run_config(run)
    if cfg is not None and cfg.get("data", {}).get("train_on_all"):
        raise CrossValError(
            f"{run} trained on all cases (data.train_on_all): its validation cases were "
            "training cases, so it has no place in a cross-validation"
        )


def fold_and_seed(run: Path) -> tuple[str, str]:
    """The ``data.fold`` and ``seed`` a run trained with (from its Hydra config); without a
    config, the folder name and seed ``"-"``."""
    cfg = _run_config(run)
    fold = None if cfg is None else cfg.get("data", {}).get("fold")
    if fold is not None:
        return str(fold), str(cfg.get("seed", "-"))
    return run.name, "-"


def read_cases(run: Path) -> list[dict]:
    """The rows of a run's :data:`TABLE`, metrics as floats (an empty cell is NaN).

    Raises:
        CrossValError: Naming the file and line, for a row whose column count differs from the
            header's (a truncated or hand-edited table) or a cell that is not a number.
    """
    path = run / TABLE
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if "case" not in (reader.fieldnames or []):
                raise CrossValError(f"{path}: line 1 is not a header with a 'case' column")
            rows = []
            for row in reader:
                if None in row or None in row.values():  # extra or missing cells
                    hint = "" if None in row else ": is the file truncated?"
                    raise CrossValError(
                        f"{path}: line {reader.line_num} has {_cells(row)} cells, the header "
                        f"{len(reader.fieldnames)}{hint}"
                    )
                rows.append(_parse_row(row, path, reader.line_num))
    except (csv.Error, UnicodeDecodeError) as err:
        raise CrossValError(f"{path}: not a readable CSV table ({err})") from err
    return rows


def _cells(row: dict) -> int:
    return sum(v is not None for k, v in row.items() if k is not None) + len(row.get(None, []))


def _parse_row(row: dict, path: Path, line: int) -> dict:
    out = {}
    for key, text in row.items():
        try:
            out[key] = text if key == "case" else _number(text)
        except ValueError:
            raise CrossValError(f"{path}: line {line}: {key} {text!r} is not a number") from None
    return out


def missing_folds(folds: dict[tuple[str, str], Path]) -> dict[str, list[int]]:
    """Per seed, the folds of its split (``data.num_folds``) that no given run validated."""
    missing = {}
    for seed in sorted({seed for _, seed in folds}):
        runs = [run for (_, s), run in folds.items() if s == seed]
        cfg = _run_config(runs[0])
        num_folds = None if cfg is None else cfg.get("data", {}).get("num_folds")
        if num_folds is None:
            continue
        present = {fold for fold, s in folds if s == seed}
        if absent := [f for f in range(int(num_folds)) if str(f) not in present]:
            missing[seed] = absent
    return missing


def _number(text: str) -> float:
    return float(text) if text not in ("", None) else math.nan


def summarise(runs: list[Path]) -> tuple[dict, list[dict]]:
    """Pooled and per-fold statistics of the runs' validation cases."""
    rows, folds, seen = [], {}, {}
    for run in runs:
        check_held_out(run)
        fold, seed = fold_and_seed(run)
        if (fold, seed) in folds:
            raise CrossValError(
                f"fold {fold} with seed {seed} appears twice: {folds[fold, seed]} and {run}"
            )
        folds[fold, seed] = run
        for row in read_cases(run):
            other = seen.get((row["case"], seed))
            if other is not None:
                raise CrossValError(
                    f"case {row['case']} is validated in fold {other} and fold {fold}:"
                    " the runs do not come from one split"
                )
            seen[row["case"], seed] = fold
            rows.append({"fold": fold, "seed": seed, **row})
    missing = missing_folds(folds)
    keys = sorted({k for row in rows for k in row if k not in _LABELS})
    per_class = {}
    for key in keys:
        values = [row[key] for row in rows if key in row and not math.isnan(row[key])]
        per_class[key] = {
            "mean": statistics.fmean(values) if values else math.nan,
            "sd": statistics.stdev(values) if len(values) > 1 else math.nan,
            "n": len(values),
        }
    per_fold = _mean_dice_by(rows, "fold")
    per_seed = _mean_dice_by(rows, "seed")
    means = {k: v for k, v in _aggregate(rows).items() if k.startswith("mean_")}
    summary = {
        "runs": {f"fold {fold} seed {seed}": str(run) for (fold, seed), run in folds.items()},
        "cases": len(rows),
        "missing_folds": missing,
        "per_class": per_class,
        "mean_over_classes": means,
        "mean_dice_per_fold": per_fold,
        "mean_dice_fold_sd": _sd(per_fold.values()),
        "mean_dice_per_seed": per_seed,
        "mean_dice_seed_sd": _sd(per_seed.values()),
    }
    return summary, rows


_LABELS = ("case", "fold", "seed")


def _aggregate(rows: list[dict]) -> dict[str, float]:
    return aggregate({k: v for k, v in row.items() if k not in _LABELS} for row in rows)


def _mean_dice_by(rows: list[dict], label: str) -> dict[str, float]:
    """Mean Dice (over classes of the per-class means) of the rows of each ``label`` value."""
    groups = sorted({row[label] for row in rows})
    return {g: _aggregate([r for r in rows if r[label] == g]).get("mean_dice") for g in groups}


def _sd(values) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.stdev(values) if len(values) > 1 else math.nan


def markdown(summary: dict) -> str:
    """Per class: mean +- sd over cases of every metric."""
    metrics = sorted({k.rpartition("_")[0] for k in summary["per_class"]})
    classes = sorted({k.rpartition("_")[2] for k in summary["per_class"]}, key=int)
    lines = ["| class | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for cls in classes:
        cells = []
        for name in metrics:
            stat = summary["per_class"].get(f"{name}_{cls}")
            cells.append(f"{stat['mean']:.3f} +- {stat['sd']:.3f}" if stat else "")
        lines.append(f"| {cls} | " + " | ".join(cells) + " |")
    lines.append("")
    for label in ("fold", "seed"):
        groups = summary[f"mean_dice_per_{label}"]
        shown = ", ".join(f"{g}: {d:.4f}" for g, d in groups.items())
        sd = summary[f"mean_dice_{label}_sd"]
        spread = f" (sd over {label}s {sd:.4f})" if len(groups) > 1 else ""
        lines.append(f"mean Dice per {label} {shown}{spread}")
    lines.append(f"{summary['cases']} case predictions from {len(summary['runs'])} runs")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hybrid_unet.crossval",
                                     description=__doc__.splitlines()[0])  # fmt: skip
    parser.add_argument("folders", nargs="+", type=Path, help="multirun dir or fold run dirs")
    parser.add_argument("--out", type=Path, help="where to write (default: the first folder)")
    args = parser.parse_args(argv)
    problem = args.out and output_dir_problem(args.out, "--out")
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        runs = find_fold_runs(args.folders)
        summary, rows = summarise(runs)
    except (CrossValError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = args.out or args.folders[0]
    out.mkdir(parents=True, exist_ok=True)
    write_case_table(out / "crossval_cases.csv", rows)
    atomic_write_json(out / "crossval_summary.json", summary)
    print(markdown(summary))
    for seed, absent in summary["missing_folds"].items():
        print(f"warning: seed {seed}: no run of fold(s) {', '.join(map(str, absent))}; the "
              "summary covers only the folds given", file=sys.stderr)  # fmt: skip
    print(f"wrote {out / 'crossval_summary.json'} and {out / 'crossval_cases.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

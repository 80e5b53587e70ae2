"""Plot training loss and mean Dice of one or several runs from their ``metrics.csv``.

    python scripts/plot_curves.py RUN_DIR [RUN_DIR ...] -o curves.png

Needs matplotlib (in the ``dev`` extra; not a dependency of the package itself).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path


def read_curves(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """``{"train_loss": [(step, value), ...], "mean_dice": [...]}`` of one run."""
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no metrics.csv in {run_dir}")
    curves: dict[str, list[tuple[int, float]]] = {"train_loss": [], "mean_dice": []}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            for key, points in curves.items():
                if row.get(key):
                    points.append((int(row["step"]), float(row[key])))
    return curves


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run dirs holding metrics.csv")
    parser.add_argument("-o", "--output", type=Path, default=Path("curves.png"))
    args = parser.parse_args(argv)
    from hybrid_unet.cli import output_dir_problem

    problem = output_dir_problem(args.output.parent, "the folder")
    if problem:
        print(f"error: -o {args.output}: {problem}", file=sys.stderr)
        return 2
    try:
        curves = {str(run): read_curves(run) for run in args.runs}
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("error: plotting needs matplotlib: pip install matplotlib", file=sys.stderr)
        return 2
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, run in curves.items():
        for ax, key in zip(axes, ("train_loss", "mean_dice"), strict=True):
            if run[key]:
                steps, values = zip(*run[key], strict=True)
                ax.plot(steps, values, marker="." if len(steps) < 30 else None, label=name)
    for ax, title in zip(axes, ("training loss", "validation mean Dice"), strict=True):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    kinds = fig.canvas.get_supported_filetypes()
    if args.output.suffix.lstrip(".").lower() not in kinds:
        print(f"error: -o {args.output}: name a picture file ending in one of "
              f"{', '.join('.' + k for k in sorted(kinds))}", file=sys.stderr)  # fmt: skip
        return 2
    from hybrid_unet.atomic import atomic_path

    with atomic_path(args.output) as tmp:  # creates the folder; never a half-written picture
        fig.savefig(tmp, dpi=120, format=args.output.suffix.lstrip(".").lower())
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

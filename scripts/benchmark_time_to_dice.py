"""Validation Dice against training wall time for several networks under one time budget.

    python scripts/benchmark_time_to_dice.py --minutes 6.5 --out runs/time_to_dice \\
        --arm hybrid_unet model=hybrid_unet --arm plain_unet model=plain_unet

Each arm is a name followed by training overrides (on top of ``--experiment``, default
``hippocampus_6min``); every arm trains under the same ``trainer.max_time_minutes``, one after
the other, keeping a checkpoint every epoch (``trainer.checkpoint.every_n_epochs=1``; the
epoch length sets the curve's resolution). Afterwards every checkpoint is scored on the run's
validation cases (the fold-0 split unless overridden), outside the timed training, and the
training time it had reached is read from the checkpoint. Writes ``time_to_dice.csv`` and, when
matplotlib is installed, ``time_to_dice.png`` to ``--out``, and prints the Dice of each arm at
each budget point side by side with the ratio to the first arm.

A checkpoint caught mid-run still has a high learning rate. ``--budgets`` measures the other way:
one run per arm, budget and seed, each decaying its learning rate to zero inside its own budget
(the way a user runs the recipe with a shorter ``trainer.max_time_minutes``), scored by its own
final validation:

    python scripts/benchmark_time_to_dice.py --budgets 1 2 4 6.5 --seeds 42 1 2 \
        --out runs/budgets --arm plain model=plain_unet --arm hybrid model=hybrid_unet

It writes ``budgets.csv`` (one row per run) and ``budgets.png`` (mean and range over seeds), and
prints the mean Dice of each arm per budget with the difference to the first arm.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import torch

from hybrid_unet.data.transforms import validated_mirror_axes
from hybrid_unet.engine import build
from hybrid_unet.engine.checkpoint import load_checkpoint
from hybrid_unet.engine.validation import validate


def parse_arms(tokens: list[list[str]]) -> dict[str, list[str]]:
    return {arm[0]: arm[1:] for arm in tokens}


def train(run_dir: Path, run_name: str, args: argparse.Namespace, settings: list[str],
          arm: list[str]) -> None:  # fmt: skip
    """``python -m hybrid_unet.train`` on ``--experiment`` into ``run_dir``; later overrides win:
    this script's ``settings``, then the overrides for every arm, then the arm's own."""
    cmd = [
        sys.executable, "-m", "hybrid_unet.train", f"+experiment={args.experiment}", *settings,
        f"hydra.run.dir={run_dir}", f"run_name={run_name}", *args.overrides, *arm,
    ]  # fmt: skip
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env={**os.environ, "WANDB_MODE": "offline"})


def train_arm(name: str, overrides: list[str], args: argparse.Namespace) -> Path:
    run_dir = (args.out / name).resolve()
    settings = [
        f"trainer.max_time_minutes={args.minutes}", f"trainer.steps_per_epoch={args.epoch_steps}",
        "trainer.max_epochs=100000", "trainer.checkpoint.every_n_epochs=1",
    ]  # fmt: skip
    train(run_dir, f"time_to_dice_{name}", args, settings, overrides)
    return run_dir


def train_budget(name: str, overrides: list[str], minutes: float, seed: int,
                 args: argparse.Namespace) -> dict:  # fmt: skip
    """One run that fits its whole schedule into ``minutes``; its final validation Dice."""
    run_dir = (args.out / f"{name}_{minutes:g}min_s{seed}").resolve()
    settings = [f"trainer.max_time_minutes={minutes}", f"seed={seed}"]
    train(run_dir, f"budget_{name}_{minutes:g}min_s{seed}", args, settings, overrides)
    with open(run_dir / "metrics.csv", newline="") as f:
        validated = [r for r in csv.DictReader(f) if r.get("mean_dice")]
    summary = json.loads((run_dir / "summary.json").read_text())
    row = {
        "arm": name, "budget_min": minutes, "seed": seed, "steps": summary["steps"],
        "train_s": summary["train_seconds"], "mean_dice": round(float(validated[-1]["mean_dice"]), 4),
    }  # fmt: skip
    print(f"{name} {minutes:g} min seed {seed}: {row['steps']} steps, "
          f"mean Dice {row['mean_dice']:.4f}", flush=True)  # fmt: skip
    return row


def dice_of(rows: list[dict], arm: str, budget: float) -> list[float]:
    """The Dice of every seed of ``arm`` at ``budget`` minutes."""
    return [r["mean_dice"] for r in rows if r["arm"] == arm and r["budget_min"] == budget]


def budget_table(rows: list[dict], arms: list[str]) -> str:
    """Mean Dice over seeds per arm and budget, and each arm's difference to the first."""
    head = "| budget min | " + " | ".join(arms) + f" | difference to {arms[0]} |"
    lines = [head, "|---" * (len(arms) + 2) + "|"]
    for b in sorted({r["budget_min"] for r in rows}):
        means = [statistics.mean(v) if (v := dice_of(rows, a, b)) else None for a in arms]
        cells = [f"{m:.4f}" if m is not None else "-" for m in means]
        diffs = [f"{m - means[0]:+.4f}" if m is not None and means[0] else "-" for m in means[1:]]
        lines.append(f"| {b:g} | " + " | ".join(cells) + " | " + " / ".join(diffs) + " |")
    return "\n".join(lines)


def plot_budgets(rows: list[dict], arms: list[str], path: Path) -> bool:
    plt = _pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for arm in arms:
        budgets = sorted({r["budget_min"] for r in rows if r["arm"] == arm})
        vals = [dice_of(rows, arm, b) for b in budgets]
        means = [statistics.mean(v) for v in vals]
        lows = [m - min(v) for m, v in zip(means, vals, strict=True)]
        highs = [max(v) - m for m, v in zip(means, vals, strict=True)]
        ax.errorbar(budgets, means, yerr=[lows, highs], marker="o", capsize=3, label=arm)
    save_figure(fig, ax, path, "training budget (min), one run per point",
                "validation mean Dice (mean, range over seeds)")  # fmt: skip
    return True


def write_csv(rows: list[dict], path: Path) -> None:
    columns = sorted({k for r in rows for k in r}, key=lambda k: (k.startswith("dice_"), k))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {path}")


@torch.no_grad()
def score_checkpoints(name: str, run_dir: Path, threads: int | None) -> list[dict]:
    """Mean Dice (and per class) of every checkpoint of a run on its validation cases."""
    ckpts = sorted((run_dir / "checkpoints").glob("epoch-*.pt"))
    cfg = load_checkpoint(ckpts[-1])["config"]
    if threads:
        torch.set_num_threads(threads)
    data = build.build_data(cfg, run_dir)
    cases = [data.source.load(n) for n in data.val_names]
    model, t, d = build.build_model(cfg), cfg["trainer"], cfg["data"]
    rows = []
    for path in ckpts:
        ckpt = load_checkpoint(path)
        model.load_state_dict(ckpt.get("ema") or ckpt["model"])
        summary, _ = validate(
            model, cases, d["num_classes"], tuple(d["patch_size"]), torch.device("cpu"),
            t["precision"], t["val_overlap"], t["val_sw_batch_size"], ("dice",),
            mirror_axes=validated_mirror_axes(cfg),  # as the run validated
        )  # fmt: skip
        state = ckpt["state"]
        rows.append({
            "arm": name, "epoch": state["epoch"], "step": state["step"],
            "elapsed_s": round(state["elapsed_seconds"], 1),
            "mean_dice": round(summary["mean_dice"], 4),
            **{k: round(v, 4) for k, v in summary.items() if k.startswith("dice_")},
        })  # fmt: skip
        print(f"{name} step {state['step']} at {state['elapsed_seconds']:.0f} s: "
              f"mean Dice {summary['mean_dice']:.4f}", flush=True)  # fmt: skip
    return rows


def dice_at(rows: list[dict], seconds: float) -> float | None:
    """The Dice of the last checkpoint written by ``seconds`` of training."""
    reached = [r for r in rows if r["elapsed_s"] <= seconds]
    return reached[-1]["mean_dice"] if reached else None


def side_by_side(rows: list[dict], arms: list[str], points: list[float]) -> str:
    head = "| training s | " + " | ".join(arms) + f" | ratio to {arms[0]} |"
    lines = [head, "|---" * (len(arms) + 2) + "|"]
    for p in points:
        vals = [dice_at([r for r in rows if r["arm"] == a], p) for a in arms]
        cells = [f"{v:.4f}" if v is not None else "-" for v in vals]
        ratios = [f"{v / vals[0]:.3f}" if v is not None and vals[0] else "-" for v in vals[1:]]
        lines.append(f"| {p:.0f} | " + " | ".join(cells) + " | " + " / ".join(ratios) + " |")
    return "\n".join(lines)


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no PNG (pip install matplotlib)")
        return None
    return plt


def save_figure(fig, ax, path: Path, xlabel: str, ylabel: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot(rows: list[dict], arms: list[str], path: Path) -> bool:
    plt = _pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for arm in arms:
        mine = [r for r in rows if r["arm"] == arm]
        ax.plot([r["elapsed_s"] / 60 for r in mine], [r["mean_dice"] for r in mine],
                marker="o", label=arm)  # fmt: skip
    save_figure(fig, ax, path, "training time (min)", "validation mean Dice")
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arm", nargs="+", action="append", required=True,
                        metavar=("NAME", "OVERRIDE"), help="an arm: name and its overrides")  # fmt: skip
    parser.add_argument("--minutes", type=float, default=6.5)
    parser.add_argument("--experiment", default="hippocampus_6min")
    parser.add_argument("--epoch-steps", type=int, default=100, help="steps between checkpoints")
    parser.add_argument("--threads", type=int, default=None, help="threads for scoring")
    parser.add_argument("--out", type=Path, default=Path("runs/time_to_dice"))
    parser.add_argument("--score-only", action="store_true", help="score existing runs")
    parser.add_argument("--budgets", type=float, nargs="+", default=None,
                        help="minutes: one run per budget, each with its own LR decay")  # fmt: skip
    parser.add_argument("--seeds", type=int, nargs="+", default=[42], help="with --budgets")
    parser.add_argument("overrides", nargs="*", help="overrides for every arm")
    args = parser.parse_args()
    arms = parse_arms(args.arm)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    if args.budgets:
        for minutes in args.budgets:
            for seed in args.seeds:
                rows += [train_budget(n, o, minutes, seed, args) for n, o in arms.items()]
        write_csv(rows, args.out / "budgets.csv")
        print(budget_table(rows, list(arms)))
        if plot_budgets(rows, list(arms), args.out / "budgets.png"):
            print(f"wrote {args.out / 'budgets.png'}")
        return 0
    for name, overrides in arms.items():
        run_dir = args.out.resolve() / name if args.score_only else train_arm(name, overrides, args)
        rows += score_checkpoints(name, run_dir, args.threads)
    write_csv(rows, args.out / "time_to_dice.csv")
    points = [60.0 * m for m in (1, 2, 3, 4, 5, 6, 6.5, 10, 15, 20, 25, 30) if m <= args.minutes]
    print(side_by_side(rows, list(arms), points))
    if plot(rows, list(arms), args.out / "time_to_dice.png"):
        print(f"wrote {args.out / 'time_to_dice.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

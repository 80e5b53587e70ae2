"""Score predicted label maps against references, per case and per class.

    python -m hybrid_unet.evaluate PREDICTIONS REFERENCES --num-classes K [--out DIR]
        [--decide-postprocessing RUN_DIR] [--ignore-label N]

Both are folders of NIfTI label maps matched by case name (the file name less ``.nii`` or
``.nii.gz``: predict's ``case.nii.gz`` meets a reference ``case.nii``); distances use each
reference's voxel spacing. Writes ``DIR/metrics.csv`` (one row per case, a column per metric
and class) and ``DIR/summary.json`` (per metric and class: mean, sample standard deviation and
the number of cases where it is defined; and the mean over foreground classes), and prints the
means.

``--decide-postprocessing RUN_DIR`` (predictions made with ``largest_component=[]`` on the
run's validation cases) also decides, per class, whether keeping the largest connected
component raises the mean Dice, and stores the decision in ``RUN_DIR/postprocessing.json``,
which ``predict`` then applies (``largest_component=auto``).

``--ignore-label N`` (nnU-Net's ignore label): reference voxels of value ``N`` were never
annotated, so they count for no class in any metric.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from hybrid_unet.cli import output_dir_problem
from hybrid_unet.data.errors import DataError
from hybrid_unet.data.io.folders import visible_entries
from hybrid_unet.data.io.geometry import Geometry
from hybrid_unet.data.io.registry import known_suffix
from hybrid_unet.data.validation import geometry_problem

_NAMES_SHOWN = 5


def summarize(per_case: dict[str, dict[str, float]]) -> dict:
    """Per key: mean, sd and n over the cases where it is not NaN; class means.

    The sd is the sample standard deviation (n - 1), as ``crossval`` reports; ``None`` for one
    case."""
    from hybrid_unet.metrics import aggregate

    keys = sorted({k for values in per_case.values() for k in values})
    out: dict = {"cases": len(per_case), "per_class": {}}
    for key in keys:
        values = np.asarray([v[key] for v in per_case.values() if not math.isnan(v[key])])
        out["per_class"][key] = {
            "mean": float(values.mean()) if values.size else None,
            "sd": float(values.std(ddof=1)) if values.size > 1 else None,
            "n": int(values.size),
        }
    means = aggregate(per_case.values())
    out["mean_over_classes"] = {
        k: (None if math.isnan(v) else v) for k, v in means.items() if k.startswith("mean_")
    }
    return out


def _argument_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the arguments, checked before any work; ``None`` when nothing."""
    for folder in (args.predictions, args.references):
        if not folder.is_dir():
            return f"{folder} does not exist or is not a folder"
    if args.num_classes < 2:
        return f"--num-classes counts the background and must be >= 2, got {args.num_classes}"
    if args.ignore_label is not None and args.ignore_label < args.num_classes:
        return (f"--ignore-label {args.ignore_label} is one of the --num-classes "
                f"{args.num_classes} classes; it must be above them")  # fmt: skip
    if args.out and (problem := output_dir_problem(args.out, "--out")):
        return problem
    if args.out and (foreign := _foreign_summary(args.out / "summary.json")):
        return foreign
    run = args.decide_postprocessing
    if run and not run.is_dir():
        return f"--decide-postprocessing {run} does not exist or is not a folder"
    if run and not ((run / "checkpoints").is_dir() or (run / ".hydra").is_dir()):
        return f"--decide-postprocessing {run} is not a run dir: no checkpoints/ or .hydra/ inside"
    return None


def _decision_problem(args: argparse.Namespace, preds: list[Path]) -> str | None:
    """Why these predictions cannot decide the run's post-processing: predict says (its
    ``summary.json``) they were post-processed already or made by other checkpoints than the
    run's (an ensemble, another run), or the run's ``splits.json`` says some cases are ones it
    trained on. The decision replaces what every later ``predict`` applies."""
    import yaml

    from hybrid_unet.data.splits import fold_validation_cases

    run, flag = args.decide_postprocessing, "--decide-postprocessing"
    try:
        settings = json.loads((args.predictions / "summary.json").read_text())["settings"]
    except (OSError, ValueError, KeyError, TypeError):
        settings = {}  # predictions of another tool: nothing to check
    if settings.get("largest_component"):
        return (f"{flag}: {args.predictions} was predicted with largest_component="
                f"{settings['largest_component']}, so it cannot show what that removal gains; "
                "predict again with largest_component=[]")  # fmt: skip
    if problem := _other_checkpoints_problem(settings.get("checkpoints"), run):
        return f"{flag}: {args.predictions} was predicted {problem}"
    try:
        fold = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())["data"]["fold"]
        val = fold_validation_cases(run, fold)
    except (OSError, ValueError, KeyError, TypeError, IndexError, yaml.YAMLError):
        val = None
    if val is None:
        return None  # not a run that records its split
    trained = sorted(_case(p) for p in preds if _case(p) not in set(val))
    if trained:
        shown = ", ".join(trained[:3]) + (
            f" and {len(trained) - 3} more" if len(trained) > 3 else ""
        )
        return (f"{flag}: {shown} are not in {run}'s validation fold {fold} (it trained on them): "
                "decide on its validation cases (predict split=val)")  # fmt: skip
    return None


def _other_checkpoints_problem(checkpoints: object, run: Path) -> str | None:
    """How predict's recorded ``checkpoints`` are not the run's own network alone, else
    ``None`` (none recorded: predictions of another tool, nothing to check). The decision is
    stored with the run and applied to its predictions; another network's masks say nothing
    about what removing components gains for it."""
    from hybrid_unet.inference.postprocessing import postprocessing_path

    if not isinstance(checkpoints, list) or not checkpoints:
        return None
    if len(checkpoints) > 1:
        shown = ", ".join(map(str, checkpoints[:3])) + (", ..." if len(checkpoints) > 3 else "")
        return (f"by an ensemble of {len(checkpoints)} checkpoints ({shown}), not by {run} "
                f"alone: predict with checkpoints={run}")  # fmt: skip
    if postprocessing_path(checkpoints[0]).parent.resolve() != run.resolve():
        return f"by {checkpoints[0]}, not by {run}: predict with checkpoints={run}"
    return None


def _foreign_summary(path: Path) -> str | None:
    """Why ``path`` must not be overwritten: a ``summary.json`` that evaluate did not write.

    ``predict`` writes its own ``summary.json`` (the cases, failures and settings) beside the
    label maps, so ``--out`` pointed at a predictions folder would replace it.
    """
    if not path.is_file():
        return None
    try:
        ours = "per_class" in json.loads(path.read_text())
    except (OSError, ValueError, TypeError):
        ours = False
    if ours:
        return None
    return (f"--out {path.parent} already holds a summary.json that evaluate did not write "
            f"(predict's, for one); give another folder, e.g. --out {path.parent / 'evaluation'}")  # fmt: skip


def _label_files(folder: Path) -> list[Path]:
    """NIfTI files of ``folder``, less hidden ones (the ``.tmp-*`` of an interrupted write)."""
    return [p for p in visible_entries(folder) if p.name.lower().endswith((".nii", ".nii.gz"))]


def _case(path: Path) -> str:
    """The case a label file holds: its name less ``.nii`` / ``.nii.gz`` (any case), so that
    predict's ``case.nii.gz`` meets a reference stored as ``case.nii``."""
    return path.name[: -len(known_suffix(path.name))]  # _label_files holds NIfTI files only


def _references(folder: Path) -> tuple[dict[str, Path], str | None]:
    """References by case, or a problem when two files hold the same case."""
    refs: dict[str, Path] = {}
    for path in _label_files(folder):
        case = _case(path)
        if case in refs:
            return refs, (f"{folder} holds two references of case {case!r}: "
                          f"{refs[case].name} and {path.name}")  # fmt: skip
        refs[case] = path
    return refs, None


def _unmatched_problem(unmatched: list[Path], references: Path) -> str:
    shown = ", ".join(p.name for p in unmatched[:_NAMES_SHOWN])
    more = f" and {len(unmatched) - _NAMES_SHOWN} more" if len(unmatched) > _NAMES_SHOWN else ""
    return (f"{len(unmatched)} prediction(s) in {unmatched[0].parent} have no reference of the "
            f"same case name (.nii or .nii.gz) in {references}: {shown}{more}")  # fmt: skip


def read_pair(
    pred_path: Path, ref_path: Path, num_classes: int, ignore_label: int | None = None
) -> tuple[np.ndarray, np.ndarray, Geometry]:
    """A prediction, its reference and the reference's geometry. Where the reference holds
    ``ignore_label`` (unannotated voxels) both maps are set to background: those voxels count
    for no class.

    Raises:
        DataError: Naming the prediction and its reference when the two do not share a grid
            (shape, spacing up to a relative 1e-3, affine), or the file holding a label outside
            ``[0, num_classes)`` (the reference: or ``ignore_label``).
    """
    from hybrid_unet.data.io import read_label
    from hybrid_unet.metrics.segmentation import without_unannotated

    pred, pred_geo = read_label(pred_path)
    ref, ref_geo = read_label(ref_path)
    if pred.shape != ref.shape:  # either may be the wrong one: name both
        raise DataError(pred_path, f"shape {pred.shape} differs from the shape {ref.shape} of "
                                   f"the reference {ref_path}")  # fmt: skip
    grid = geometry_problem("prediction", ref_geo, pred_geo, f"reference {ref_path}")
    if grid:
        raise DataError(pred_path, grid)
    kept_pred, kept_ref = without_unannotated(pred, ref, ignore_label)
    for path, labels in ((pred_path, pred), (ref_path, kept_ref)):
        bad = int((labels >= num_classes).sum())  # read_label returns uint8: never negative
        if bad:
            raise DataError(path, f"{bad} voxels hold labels outside [0, {num_classes}) (largest "
                                  f"{labels.max()}); is --num-classes right (or is it an "
                                  "ignore label: --ignore-label)?")  # fmt: skip
    return kept_pred, kept_ref, ref_geo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hybrid_unet.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("predictions", type=Path)
    parser.add_argument("references", type=Path)
    parser.add_argument("--num-classes", type=int, required=True, help="K, background included")
    parser.add_argument("--metrics", default="dice,iou,precision,recall,hd95,nsd",
                        help="comma-separated, from dice, iou, precision, recall, hd95 (mm) "
                             "and nsd (surface Dice); default: all")  # fmt: skip
    parser.add_argument("--tolerance-mm", type=float, default=1.0,
                        help="tolerance of the surface Dice in mm (default 1.0)")  # fmt: skip
    parser.add_argument("--ignore-label", type=int, metavar="N",
                        help="reference value of unannotated voxels (nnU-Net's ignore label), "
                             "left out of every metric")  # fmt: skip
    parser.add_argument("--out", type=Path, help="folder for metrics.csv and summary.json")
    parser.add_argument("--decide-postprocessing", type=Path, metavar="RUN_DIR",
                        help="decide and store largest-component post-processing for a run")  # fmt: skip
    args = parser.parse_args(argv)

    from hybrid_unet.atomic import atomic_write_json, atomic_write_text
    from hybrid_unet.inference.outputs import csv_text
    from hybrid_unet.inference.postprocessing import POSTPROCESSING_FILE, decide_largest_component
    from hybrid_unet.metrics import case_metrics

    problem = _argument_problem(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    refs, problem = _references(args.references)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    preds = _label_files(args.predictions)
    unmatched = [p for p in preds if _case(p) not in refs]
    if unmatched:
        print(f"error: {_unmatched_problem(unmatched, args.references)}", file=sys.stderr)
        return 2
    if not preds:
        print(f"error: no prediction (*.nii, *.nii.gz) in {args.predictions}", file=sys.stderr)
        return 2
    if args.decide_postprocessing and (problem := _decision_problem(args, preds)):
        print(f"error: {problem}", file=sys.stderr)
        return 2
    names = tuple(args.metrics.split(","))
    per_case, pairs, problems = {}, [], []
    try:
        for pred_path in preds:  # every bad pair is named, not only the first
            try:
                pred, ref, geometry = read_pair(pred_path, refs[_case(pred_path)],
                                                args.num_classes, args.ignore_label)  # fmt: skip
            except DataError as exc:
                problems.append(str(exc))
                continue
            if problems:  # nothing will be written: only check the rest
                continue
            per_case[_case(pred_path)] = case_metrics(pred, ref, args.num_classes, geometry.spacing,
                                                    names, args.tolerance_mm)  # fmt: skip
            if args.decide_postprocessing:
                pairs.append((pred, ref))
    except ValueError as exc:  # an unknown metric name
        problems.append(str(exc))
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    summary = summarize(per_case)
    for key, value in sorted(summary["mean_over_classes"].items()):
        print(f"{key:16s} {'n/a' if value is None else f'{value:.4f}'}")
    print(f"{len(per_case)} cases; {len(refs) - len(per_case)} references without a prediction")
    if args.out:
        rows = [{"case": name, **values} for name, values in per_case.items()]
        atomic_write_text(args.out / "metrics.csv", csv_text(rows))
        atomic_write_json(args.out / "summary.json", summary, indent=1)
    if args.decide_postprocessing:
        decision = decide_largest_component(pairs, args.num_classes)
        path = atomic_write_text(args.decide_postprocessing / POSTPROCESSING_FILE,
                                 json.dumps(decision, indent=1))  # fmt: skip
        print(f"Largest component kept for classes {decision['largest_component'] or 'none'}: "
              f"{path}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

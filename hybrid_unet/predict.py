"""Segment new scans with one or more trained runs.

    python -m hybrid_unet.predict checkpoints=RUN_DIR input=SCANS output=OUT_DIR [key=value ...]

``input`` is a NIfTI file or folder (an MSD ``imagesTs``), a DICOM series folder or a folder of
series, an HDF5 file or a ``dataset.json`` (``split=test|training|val``). Each run's own plan
preprocesses the scans; label maps are written as NIfTI with each scan's own affine and size
(a DICOM series gives a NIfTI in the series' geometry), with ``volumes.csv`` and
``summary.json``. Cases are independent: one that fails is named in the summary, the rest are
predicted, and the exit code is 1. Configuration errors exit with code 2. All keys:
``conf/predict.yaml``.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hybrid_unet.cli import exit_on_user_error, output_dir_problem, plain_warnings
from hybrid_unet.config.errors import ConfigError, did_you_mean, unresolved_key
from hybrid_unet.config.schema import PredictConfig, register_configs
from hybrid_unet.config.validate import target_problems

register_configs()
logging.getLogger("alembic").setLevel(logging.WARNING)


def check_predict_config(cfg: DictConfig) -> dict[str, Any]:
    """Resolve and check a composed ``predict`` config; every problem in one ConfigError."""
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as exc:
        raise ConfigError([unresolved_key(exc)]) from exc
    problems: list[str] = []
    try:
        OmegaConf.merge(OmegaConf.structured(PredictConfig), resolved)
    except OmegaConfBaseException as exc:
        fields = PredictConfig.__dataclass_fields__
        if "not in" in str(exc.msg):
            problems.append(
                f"unknown config key '{exc.full_key}'{did_you_mean(str(exc.key), fields)}"
            )
        else:
            problems.append(
                f"bad value for config key '{exc.full_key}': {str(exc.msg).splitlines()[0]}"
            )
    problems += target_problems(resolved["sliding_window"], "sliding_window")
    overlap = resolved["sliding_window"].get("overlap")
    if isinstance(overlap, int | float) and not 0 <= overlap < 1:
        problems.append(f"config key 'sliding_window.overlap': {overlap} is outside [0, 1)")
    if problem := _patch_size_problem(resolved["sliding_window"].get("patch_size")):
        problems.append(problem)
    ckpts = resolved["checkpoints"]
    resolved["checkpoints"] = [ckpts] if isinstance(ckpts, str) else list(ckpts)
    problems += _count_problems(resolved)
    lcc = resolved["largest_component"]
    if lcc != "auto" and not (isinstance(lcc, list) and all(isinstance(c, int) for c in lcc)):
        problems.append(f"config key 'largest_component': 'auto' or a list of classes, got {lcc!r}")
    if resolved["connectivity"] not in (1, 2, 3):
        problems.append(f"config key 'connectivity': 1, 2 or 3, got {resolved['connectivity']}")
    members = len(resolved["checkpoints"]) * max(1, resolved["mc_dropout_samples"])
    if resolved["save_uncertainty"] and members < 2:
        problems.append("config key 'save_uncertainty': needs several checkpoints or "
                        "mc_dropout_samples >= 2 (disagreement needs two predictions)")  # fmt: skip
    if problems:
        raise ConfigError(problems)
    resolved["precision"] = str(resolved["precision"]).split(".")[-1]
    return resolved


def _patch_size_problem(patch_size: Any) -> str | None:
    """Why ``sliding_window.patch_size`` is no window of the scans' three spatial axes (it
    failed every case, deep in the stitching), else ``None``; ``null`` is the run's patch."""
    if patch_size is None:
        return None
    sizes = patch_size if isinstance(patch_size, list) else [patch_size]
    if len(sizes) == 3 and all(isinstance(p, int) and not isinstance(p, bool) and p > 0
                               for p in sizes):  # fmt: skip
        return None
    return (f"config key 'sliding_window.patch_size': {patch_size!r} is no window of the scans' "
            "3 spatial axes: give 3 positive sizes [d, h, w], or null for the run's own patch")  # fmt: skip


def _count_problems(resolved: dict[str, Any]) -> list[str]:
    """Counts torch refused with a traceback: fewer than one thread. (No checkpoint and a
    negative ``mc_dropout_samples`` are the Predictor's own checks, before it loads anything.)"""
    threads = resolved["num_threads"]
    if isinstance(threads, int) and threads < 1:
        return [f"config key 'num_threads': {threads} is outside [1, inf) (null: torch's default)"]
    return []


def class_names(predictor, names: list[str] | None) -> dict[int, str]:
    """Class value -> name: given, else the training dataset.json's, else ``class_<c>``."""
    k = predictor.num_classes
    if names is not None:
        if len(names) != k - 1:
            raise ConfigError([f"config key 'class_names': {len(names)} names for {k - 1} classes"])
        return {c: n for c, n in enumerate(["background", *names])}
    try:
        from hybrid_unet.data.layouts import detect_layout

        labels = detect_layout(predictor.cfg["data"]["source"]["root"]).labels
        if len(labels) == k:
            return {c: str(labels[c]) for c in range(k)}
    except Exception:  # the training data is not here: generic names
        pass
    return {c: f"class_{c}" for c in range(k)}


def validation_names(predictor) -> list[str] | None:
    """The validation cases of the runs (each run dir's ``splits.json``; ``None`` without it).

    Raises:
        ConfigError: Naming ``split`` and two runs, when an ensemble's runs validated on
            different cases (other folds): one run's validation cases are another's training
            cases, so their scores would not be validation scores.
    """
    from hybrid_unet.data.splits import fold_validation_cases

    runs = [(ckpt.parent.parent, cfg["data"]["fold"])
            for ckpt, cfg in zip(predictor.checkpoints, predictor.configs, strict=True)]  # fmt: skip
    folds = [fold_validation_cases(run, fold) for run, fold in runs]
    for (run, fold), val in zip(runs[1:], folds[1:], strict=True):
        if (val is None, set(val or ())) != (folds[0] is None, set(folds[0] or ())):
            first = _fold_name(*runs[0], folds[0])
            raise ConfigError([f"config key 'split': 'val' with runs that validated on different "
                               f"cases, {first} and {_fold_name(run, fold, val)}: one's "
                               "validation cases are another's training cases; predict split=val "
                               "with runs of one fold"])  # fmt: skip
    return folds[0]


def _fold_name(run: Path, fold: int, val: list[str] | None) -> str:
    """``RUN (fold N)``, or ``RUN (no splits.json)``."""
    return f"{run} (fold {fold})" if val is not None else f"{run} (no splits.json)"


def run_prediction(cfg: dict[str, Any]) -> dict:
    """Predict everything ``cfg`` (a checked ``predict`` config) names; returns the summary."""
    import torch
    from hydra.utils import instantiate

    from hybrid_unet.inference.inputs import find_cases
    from hybrid_unet.inference.outputs import output_clash, predict_cases
    from hybrid_unet.inference.predictor import Predictor

    if cfg["num_threads"]:
        torch.set_num_threads(cfg["num_threads"])
    window = instantiate(cfg["sliding_window"], _convert_="all")
    predictor = Predictor(cfg["checkpoints"], cfg["device"], cfg["precision"], window,
                          cfg["mc_dropout_samples"], cfg["largest_component"],
                          cfg["connectivity"])  # fmt: skip
    val = validation_names(predictor) if cfg["split"] == "val" else None
    cases = find_cases(cfg["input"], cfg["split"], val)
    if clash := output_clash(cases, cfg["output"]):
        raise ConfigError([clash])
    names = class_names(predictor, cfg["class_names"])
    settings = {
        "checkpoints": [str(p.resolve()) for p in predictor.checkpoints],
        "sliding_window": predictor.sliding_window.settings(),
        "largest_component": predictor.largest_component,
        "precision": cfg["precision"],
        "mc_dropout_samples": cfg["mc_dropout_samples"],
        "class_names": {str(c): n for c, n in names.items()},
    }
    print(f"Predicting {len(cases)} case(s) with {len(predictor.models)} network(s); "
          f"mirrored along axes {predictor.sliding_window.mirror_axes or 'none'}; "
          f"largest component kept for classes {predictor.largest_component or 'none'}.")  # fmt: skip

    def segmenter(image, geometry):
        return predictor.segment(
            image, geometry, cfg["save_probabilities"], cfg["save_uncertainty"]
        )

    return predict_cases(cases, segmenter, cfg["output"], names, cfg["connectivity"], settings)


@hydra.main(version_base="1.3", config_path="pkg://hybrid_unet.conf", config_name="predict")
def predict(cfg: DictConfig) -> None:
    """Hydra task: check the config, predict, exit 1 if a case failed."""
    from hybrid_unet.inference.outputs import report

    try:
        summary = run_prediction(check_predict_config(cfg))
    except Exception as exc:
        _discard_if_empty(Path(HydraConfig.get().runtime.output_dir))
        exit_on_user_error(exc)
        raise
    if report(summary, cfg.output):
        raise SystemExit(1)


def _discard_if_empty(output: Path) -> None:
    """Remove Hydra's ``.hydra`` from an output folder no prediction ever wrote into (no
    ``summary.json``), and the folder itself when nothing else is in it."""
    from hybrid_unet.inference.outputs import SUMMARY_FILE

    if not output.is_dir() or (output / SUMMARY_FILE).exists():
        return
    shutil.rmtree(output / ".hydra", ignore_errors=True)
    if not any(output.iterdir()):
        output.rmdir()


def _argument_problem(args: list[str]) -> str | None:
    """What is wrong with the command line where Hydra's own message would mislead or come
    too late: a training config group, an empty ``output=`` (Hydra would predict into the
    working directory) or an output that is a file (a traceback creating its run dir)."""
    if problem := _group_problem(args):
        return problem
    given = [a.split("=", 1)[1] for a in args if a.startswith("output=")]
    output = given[-1] if given else None  # Hydra applies the last
    if output == "":
        return "config key 'output' is empty: give the folder for the label maps"
    return output_dir_problem(output) if output else None


def _group_problem(args: list[str]) -> str | None:
    """Why an override choosing a training config group (``model=plain_unet``,
    ``+loss=dice_ce``) does not apply, else ``None``. Hydra said "Could not override 'model'
    ... use +model=plain_unet", and that failed too."""
    from importlib.resources import files

    groups = {g.name for g in files("hybrid_unet.conf").iterdir() if g.is_dir()} - {"hydra"}
    for arg in args:
        group = arg.split("=", 1)[0].lstrip("+~").split("/")[0]
        if arg.startswith("-") or group not in groups:
            continue
        what = "the model comes" if group == "model" else "the training settings come"
        return (f"predict takes no config group '{group}': {what} from the run's checkpoint "
                "(predict's own keys: python -m hybrid_unet.predict --help)")  # fmt: skip
    return None


def _missing_output(exc: Exception) -> bool:
    """Whether Hydra failed resolving its run dir (``${output}``) because ``output`` is unset."""
    from omegaconf.errors import InterpolationToMissingValueError, MissingMandatoryValue

    missing = isinstance(exc, InterpolationToMissingValueError | MissingMandatoryValue)
    return missing and exc.full_key == "hydra.run.dir"


def _interrupt(signum, frame) -> None:
    # SIGTERM unwinds like Ctrl-C, so the writers' finally blocks remove their temporary files.
    raise KeyboardInterrupt


def main() -> None:
    """Console entry: run Hydra, turning config and input errors into one readable message."""
    user_wants_traceback = os.environ.get("HYDRA_FULL_ERROR") == "1"
    if user_wants_traceback:
        os.environ["HYBRID_UNET_TRACEBACK"] = "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let errors reach us instead of Hydra's printer
    signal.signal(signal.SIGTERM, _interrupt)
    plain_warnings()
    if problem := _argument_problem(sys.argv[1:]):
        print(f"error: {problem}", file=sys.stderr)
        raise SystemExit(2)
    try:
        predict()
    except KeyboardInterrupt:
        print(
            "Interrupted: finished cases are complete; no partial file was left.", file=sys.stderr
        )
        raise SystemExit(130) from None
    except Exception as exc:
        if user_wants_traceback:
            raise
        if _missing_output(exc):  # Hydra said "config key 'hydra.run.dir': ..."
            print("error: config key 'output': Missing mandatory value: output", file=sys.stderr)
            raise SystemExit(2) from None
        exit_on_user_error(exc)
        raise


if __name__ == "__main__":
    main()

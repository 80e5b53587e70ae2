"""The one place where config nodes become objects."""

from __future__ import annotations

import dataclasses
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_object, instantiate
from torch.utils.data import DataLoader

from hybrid_unet.config.errors import ConfigError
from hybrid_unet.data.patches import PatchDataset, StepSampler
from hybrid_unet.data.planning import apply_plan, config_over_plan
from hybrid_unet.data.splits import load_or_create_splits
from hybrid_unet.engine.checkpoint import load_checkpoint, resolve_checkpoint
from hybrid_unet.engine.distributed import RankSampler
from hybrid_unet.losses.deep_supervision import DeepSupervisionLoss

_PLANNED = ("strides", "kernel_sizes")


@dataclass
class TrainingData:
    """A case source split into training and validation cases."""

    source: Any
    train_names: list[str]
    val_names: list[str]
    plan: dict | None = None
    ignore_label: int | None = None  # unannotated voxels: out of the loss and the metrics


def resolve_device(name: str, key: str = "trainer.device") -> torch.device:
    """``auto`` picks CUDA when present; a CUDA device on a machine without one is refused.

    Raises:
        ConfigError: naming ``key``, for a name that is no device (``gpu``) or a CUDA device
            this torch build or machine lacks.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):  # "gpu", "cuda:x": torch's parser refuses it
        raise ConfigError([f"config key '{key}': {name!r} is not a device; use auto, cpu, cuda "
                           "or cuda:N"]) from None  # fmt: skip
    if device.type == "cuda" and not torch.cuda.is_available():
        why = "a CPU-only build" if torch.version.cuda is None else "built for CUDA, no GPU seen"
        raise ConfigError([f"config key '{key}' is {name!r} but CUDA is not available (torch "
                           f"{torch.__version__}: {why}): use {key}=cpu or auto"])  # fmt: skip
    return device


def _fit_stages_to_model(source_cfg: dict, model_cfg: dict) -> dict:
    """When the plan will choose the strides, let it plan as many stages as ``model.features``
    has widths (an anisotropic dataset would otherwise get a stage more than the model's lists
    hold); an explicit ``plan_overrides.max_stages`` wins."""
    features = model_cfg.get("features")
    if "plan_overrides" not in source_cfg or model_cfg.get("strides") is not None:
        return source_cfg
    if not isinstance(features, list | tuple):
        return source_cfg
    overrides = dict(source_cfg.get("plan_overrides") or {})
    overrides.setdefault("max_stages", len(features))
    return {**source_cfg, "plan_overrides": overrides}


def build_data(cfg: dict, run_dir: Path) -> TrainingData:
    """Build the case source and pick this fold's cases (splits saved in the run dir)."""
    data = cfg["data"]
    source = instantiate(_fit_stages_to_model(data["source"], cfg["model"]))
    channels = getattr(source, "in_channels", None)
    if channels is not None and channels != data["in_channels"]:
        raise ConfigError([f"config key 'data.in_channels' is {data['in_channels']} but the "
                           f"dataset's cases have {channels} channel{'s' * (channels != 1)}: "
                           f"set data.in_channels={channels}"])  # fmt: skip
    plan = getattr(source, "plan", None)
    if plan is not None:  # the dataset's plan fills what the config leaves null
        filled = apply_plan(plan, cfg["data"], cfg["model"])
        plan.to_json(run_dir / "plan.json")
        print(plan.table())
        if filled:
            print("Taken from the plan: " + ", ".join(filled))
        if kept := config_over_plan(plan, cfg["data"], cfg["model"]):
            print("Set by the config instead: " + ", ".join(kept))
    for key in ("patch_size", "batch_size"):
        if data[key] is None:
            raise ConfigError([f"config key 'data.{key}' is null and the data source has no plan"])
    ignore = getattr(source, "ignore_label", None)
    if ignore is not None:
        filled = fill_ignore_index(cfg["loss"], ignore)
        print(f"The dataset's ignore label {ignore} is left out of the loss and the metrics"
              + (f" (taken from the dataset: {', '.join(filled)})" if filled else ""))  # fmt: skip
    names = source.case_names()
    splits = load_or_create_splits(
        run_dir / "splits.json", names, data["num_folds"], data["split_seed"]
    )
    if not 0 <= data["fold"] < len(splits):
        raise ValueError(f"data.fold={data['fold']} but there are {len(splits)} folds")
    fold = splits[data["fold"]]
    val = fold["val"][: data["max_val_cases"]] if data["max_val_cases"] else fold["val"]
    train = fold["train"]
    if data.get("train_on_all"):
        train = sorted(names)
        print(f"data.train_on_all: training on all {len(train)} cases; the validation cases of "
              f"fold {data['fold']} are training cases too, so validation Dice is no accuracy "
              "estimate.")  # fmt: skip
    plan_dict = dataclasses.asdict(plan) if plan is not None else None
    return TrainingData(source, train, val, plan_dict, ignore)


def fill_ignore_index(loss: dict, value: int, key: str = "loss") -> list[str]:
    """Set ``ignore_index`` to the dataset's ignore label on ``loss`` and, for a loss made of
    terms (``losses``), on each term; returns the dotted keys that were null.

    Raises:
        ConfigError: A loss that cannot leave voxels out (no ``ignore_index`` argument and no
            terms), or one whose ``ignore_index`` is set to another value.
    """
    if "ignore_index" not in inspect.signature(get_object(loss["_target_"])).parameters:
        if not isinstance(loss.get("losses"), dict):
            raise ConfigError([f"config key '{key}': {loss['_target_']} cannot leave out the "
                               f"dataset's ignore label {value} (it takes no ignore_index): "
                               "choose a loss that does, e.g. loss=dice_ce"])  # fmt: skip
        terms = loss["losses"]
        return [k for name in terms for k in fill_ignore_index(terms[name], value,
                                                               f"{key}.losses.{name}")]  # fmt: skip
    current = loss.get("ignore_index")
    if current is not None and current != value:
        raise ConfigError([f"config key '{key}.ignore_index' is {current} but the dataset's "
                           f"ignore label is {value}: leave it null"])  # fmt: skip
    if current is not None:
        return []
    loss["ignore_index"] = value
    return [f"{key}.ignore_index"]


def build_augmentation(node: dict | None, plan: dict | None):
    """The training transform; one whose builder takes ``spacing`` gets the plan's (so
    thick-slice data is rotated in-plane only, see ``build_train_transform``)."""
    if not node:
        return None
    builder = get_object(node["_target_"])
    takes_spacing = "spacing" in inspect.signature(builder).parameters
    if plan is not None and takes_spacing and "spacing" not in node:
        return instantiate(node, spacing=list(plan["spacing"]))
    return instantiate(node)


def build_train_loader(
    cfg: dict, data: TrainingData, start_step: int, rank: int = 0, world_size: int = 1
) -> DataLoader:
    """An endless loader whose batch ``n`` depends only on ``(seed, n)`` (and the rank)."""
    d = cfg["data"]
    transform = build_augmentation(d["augmentation"], data.plan)
    dataset = PatchDataset(
        data.source, data.train_names, d["patch_size"], d["batch_size"],
        d["oversample_foreground"], transform, seed=cfg["seed"],
    )  # fmt: skip
    workers = d["num_workers"]
    return DataLoader(
        dataset,
        batch_size=d["batch_size"],
        sampler=StepSampler(start_step * d["batch_size"])
        if world_size == 1
        else RankSampler(start_step, d["batch_size"], rank, world_size),
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
    )


def build_model(cfg: dict, pretrained: bool = True) -> torch.nn.Module:
    """The network, with pretrained weights loaded where ``trainer.pretrained`` names some
    (unless ``pretrained`` is false: a resume restores its own weights)."""
    model = instantiate_model(cfg["model"])
    stride = getattr(model, "total_stride", None)
    patch = cfg["data"]["patch_size"]
    if stride is not None and any(p % s for p, s in zip(patch, stride, strict=True)):
        fitted = [max(s, p // s * s) for p, s in zip(patch, stride, strict=True)]
        # Strides the model config fixes (not the plan's) may also be handed to the plan.
        hint = (", or model.strides=null if the model config fixes its strides (the plan's fit "
                "its own patch)") if cfg["model"].get("strides") is not None else ""  # fmt: skip
        raise ConfigError([f"config key 'data.patch_size': {list(patch)} is not divisible by the "
                           f"model's total stride {list(stride)}: use a multiple of it along "
                           f"every axis, e.g. data.patch_size={fitted}{hint}"])  # fmt: skip
    if (
        stride is not None
        and _has_instance_norm(model)
        and all(p // s == 1 for p, s in zip(patch, stride, strict=True))
    ):
        raise ConfigError([f"config key 'data.patch_size': {list(patch)} leaves the bottleneck "
                           f"1 voxel at the model's total stride {list(stride)}, and instance "
                           "norm needs more than one: use a patch of at least twice the stride "
                           "along one axis"])  # fmt: skip
    if pretrained and cfg["trainer"]["pretrained"]:
        load_pretrained(model, cfg["trainer"]["pretrained"], cfg["model"])
    return model


def _has_instance_norm(model: torch.nn.Module) -> bool:
    """Whether an instance norm (which fails on a 1-voxel map in training) is in ``model``."""
    norm = torch.nn.modules.instancenorm._InstanceNorm
    return any(isinstance(m, norm) for m in model.modules())


def instantiate_model(node: dict) -> torch.nn.Module:
    """Build a model node; planned keys still null (no plan filled them) take the model's default.

    A model that sets ``channels_last_3d`` gets its weights in that memory format; oneDNN then
    runs its convolutions channels-last (about 7 % faster steps on CPU, measured in
    docs/benchmarks.md; the instance norms still return contiguous tensors), with no change at
    the call sites.
    """
    model = instantiate({k: v for k, v in dict(node).items() if not (k in _PLANNED and v is None)})
    if getattr(model, "channels_last_3d", False):
        model = model.to(memory_format=torch.channels_last_3d)
    return model


def load_pretrained(
    model: torch.nn.Module, path: str, model_cfg: dict | None = None
) -> dict[str, list[str]]:
    """Copy every tensor of the checkpoint whose name and shape match; report the rest.

    A checkpoint of a run with a weight average (``trainer.ema_decay``) gives the average: the
    weights its validation scored, ``best.pt`` was chosen on and ``predict`` uses.

    Raises:
        ConfigError: naming ``trainer.pretrained``, when less than half of the model's encoder
            tensors (all of them, for a model without a decoder) match: the checkpoint is of
            another network, and training would start from scratch. The message names the
            checkpoint's model and the overrides that build it.
    """
    if Path(path).is_dir():  # a run dir, as predict and export take: its best.pt
        path = str(resolve_checkpoint(path))
    payload = load_checkpoint(path)
    weights = payload.get("ema") or payload.get("model", payload)
    own = model.state_dict()
    loaded, skipped = [], []
    for name, tensor in weights.items():
        if name not in own:
            skipped.append(f"{name} (not in this model)")
        elif own[name].shape != tensor.shape:
            skipped.append(f"{name} (shape {tuple(tensor.shape)} vs {tuple(own[name].shape)})")
        else:
            own[name] = tensor
            loaded.append(name)
    encoder = _encoder_names(model)
    matched = len(encoder.intersection(loaded))
    if not loaded or matched < len(encoder) / 2:
        stored = payload.get("config") if isinstance(payload.get("config"), dict) else None
        raise ConfigError([f"config key 'trainer.pretrained': {path} is another network: "
                           f"{matched} of this model's {len(encoder)} encoder tensors match "
                           f"({len(loaded)} of the checkpoint's {len(weights)} tensors in all); "
                           f"{_pretrained_hint(stored, model_cfg)}"])  # fmt: skip
    initialised = [n for n in own if n not in loaded]  # absent from the checkpoint or resized
    model.load_state_dict(own)
    print(f"Pretrained weights from {path}: {len(loaded)} tensors loaded, {len(skipped)} skipped,"
          f" {len(initialised)} left as initialised.", file=sys.stderr)  # fmt: skip
    if skipped:
        more = f"; and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        print(f"  skipped {'; '.join(skipped[:3])}{more}", file=sys.stderr)
    return {"loaded": loaded, "skipped": skipped, "missing": initialised}


def _encoder_names(model: torch.nn.Module) -> set[str]:
    """Names of the encoder's parameters (:func:`encoder_parameters`; all, without a split)."""
    try:
        encoder = {id(p) for p in encoder_parameters(model)}
    except ConfigError:
        return {name for name, _ in model.named_parameters()}
    return {name for name, p in model.named_parameters() if id(p) in encoder}


def _pretrained_hint(stored: dict | None, model_cfg: dict | None) -> str:
    """What builds the checkpoint's network: its ``_target_`` and ``features``, and the model
    overrides (keys whose values differ from this run's) that match it."""
    node = (stored or {}).get("model")
    if not isinstance(node, dict):
        return "the checkpoint stores no config; train with the model that wrote it"
    target, features = node.get("_target_"), node.get("features")
    what = f"its model is {target} with features {features}"
    if model_cfg is not None and model_cfg.get("_target_") != target:
        return f"{what}: choose that model (model=<its option>) and its settings"
    skip = {"_target_", "_partial_", "in_channels", "num_classes", *_PLANNED}
    mine = model_cfg or {}
    changes = [f"model.{k}={_override_value(v)}" for k, v in node.items()
               if k not in skip and k in mine and mine[k] != v]  # fmt: skip
    return f"{what}: add {' '.join(changes)}" if changes else what


def _override_value(value: Any) -> str:
    """``value`` as a command-line override writes it (``[8,16]``, ``true``, ``null``)."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return str(value).replace(" ", "").replace("'", "") if isinstance(value, list) else str(value)


def build_loss(cfg: dict) -> DeepSupervisionLoss:
    """The configured loss wrapped for deep supervision (a single output passes through)."""
    return DeepSupervisionLoss(instantiate(cfg["loss"]))


def build_optimizer(cfg: dict, model: torch.nn.Module, loss: torch.nn.Module):
    """Optimizer over the model's and the loss's parameters (learned loss weights).

    Weight decay applies to weight matrices and kernels only (see :func:`param_groups`).

    Raises:
        ConfigError: naming ``optimizer``, when its class refuses the configured arguments
            (``optimizer.betas=[0.9]``: one value short).
    """
    make = instantiate(cfg["optimizer"], _convert_="all")  # plain lists, as torch expects
    try:
        return make(param_groups(model, loss))
    except (ValueError, TypeError, IndexError) as exc:
        target = cfg["optimizer"].get("_target_")
        raise ConfigError([f"config key 'optimizer': {target} refuses its arguments "
                           f"({type(exc).__name__}: {exc})"]) from exc  # fmt: skip


def param_groups(model: torch.nn.Module, *others: torch.nn.Module) -> list[dict]:
    """Two groups: decayed (weights of 2+ dims) and not decayed (``weight_decay=0``).

    Exempt: biases, every parameter of a normalisation layer, any 1-D parameter (scales,
    gains, learned loss weights) or per-channel ``(1, C, 1, 1, 1)`` one (a gate's scale and
    shift), the parameters of ``others`` and the names a model lists in
    its own ``no_weight_decay()`` (position tables, as timm does). Decaying a norm's scale
    towards zero fights the normalisation and only slows training.
    """
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    norms = (torch.nn.modules.batchnorm._NormBase, torch.nn.GroupNorm, torch.nn.LayerNorm)
    decay, no_decay = [], []
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            full = f"{module_name}.{name}" if module_name else name
            # a per-channel (1, C, 1, 1, 1) scale or shift, broadcast over the batch and space
            per_channel = param.shape[:1] == (1,) and param.numel() == max(param.shape)
            exempt = param.ndim <= 1 or per_channel or isinstance(module, norms) or name == "bias"
            (no_decay if exempt or full in skip else decay).append(param)
    no_decay += [p for other in others for p in other.parameters() if p.requires_grad]
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_scheduler(cfg: dict, optimizer: torch.optim.Optimizer):
    """LR schedule stepped per optimizer step; its horizon defaults to the whole run."""
    node = dict(cfg["scheduler"])
    if "total_steps" in node and node["total_steps"] is None:
        node["total_steps"] = cfg["trainer"]["max_epochs"] * cfg["trainer"]["steps_per_epoch"]
    scheduler = instantiate(node)(optimizer)
    if steps_per_validation(scheduler) and not hasattr(scheduler, "warmup_step"):
        # The trainer steps a plateau schedule per validation and calls warmup_step() per step.
        raise ConfigError([f"config key 'scheduler._target_': {node.get('_target_')} has no "
                           "warmup_step() for the per-step warmup the trainer calls; use "
                           "scheduler=plateau (hybrid_unet.engine.schedules.WarmupPlateau, "
                           "torch's ReduceLROnPlateau with a warmup; warmup_steps=0 for none)"])  # fmt: skip
    return scheduler


def steps_per_validation(scheduler) -> bool:
    """Reduce-on-plateau follows the validation metric, not the step count."""
    return isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)  # WarmupPlateau


def encoder_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The encoder's parameters: ``model.encoder_parameters()``, else all but ``model.decoder``.

    Raises:
        ConfigError: the model has neither (``trainer.freeze_encoder_epochs`` cannot apply).
    """
    if hasattr(model, "encoder_parameters"):
        return list(model.encoder_parameters())
    decoder = getattr(model, "decoder", None)
    if not isinstance(decoder, torch.nn.Module):
        raise ConfigError([f"config key 'trainer.freeze_encoder_epochs': {type(model).__name__} "
                           "has no 'decoder' module to tell its encoder apart"])  # fmt: skip
    in_decoder = {id(p) for p in decoder.parameters()}
    return [p for p in model.parameters() if id(p) not in in_decoder]

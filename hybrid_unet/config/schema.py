"""Typed schemas of the config groups, registered in Hydra's ConfigStore.

Groups whose nodes are ``_target_`` objects (``model``, ``loss``, ``optimizer``, ``scheduler``,
``data.source``, loggers) are checked against the target's own signature at start-up
(:mod:`hybrid_unet.config.validate`), so a new model or loss needs no schema of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


class Precision(str, Enum):
    """Numeric precision of the training step."""

    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


@dataclass
class DataConfig:
    """Where cases come from and how training patches are drawn."""

    source: Any = MISSING
    """``_target_`` node building a case source (see docs/architecture.md)."""
    num_classes: int = MISSING
    """Number of classes including background."""
    in_channels: int = 1
    """Image channels (modalities)."""
    patch_size: list[int] | None = None
    """Training patch (D, H, W); ``null`` takes it from the dataset plan."""
    batch_size: int | None = None
    """Patches per step; ``null`` takes it from the dataset plan."""
    fold: int = 0
    """Cross-validation fold used for validation."""
    num_folds: int = 5
    """Number of cross-validation folds."""
    split_seed: int = 42
    """Seed of the fold split, apart from ``seed``: seed repeats validate on the same cases."""
    train_on_all: bool = False
    """Train on every case (the model to deploy, nnU-Net's fold ``all``). Validation still
    scores ``fold``'s validation cases, which are then training cases: no accuracy estimate."""
    oversample_foreground: float = 0.33
    """Fraction of each batch centred on a random foreground class."""
    num_workers: int = 0
    """DataLoader worker processes (0: load in the training process)."""
    augmentation: Any = None
    """``_target_`` node building a ``(sample, seed) -> sample`` transform, or ``null``."""
    max_val_cases: int | None = None
    """Validate on at most this many cases of the fold (``null``: all)."""


@dataclass
class CheckpointConfig:
    """Which checkpoints a run keeps (``last.pt`` and ``last-prev.pt`` always)."""

    monitor: str = "mean_dice"
    """Validation metric (a metrics.csv column) that picks ``best.pt`` and the top k."""
    mode: str = "max"
    """``max`` when a higher ``monitor`` is better, ``min`` when lower is."""
    save_top_k: int = 1
    """Best checkpoints kept: 0 none, 1 ``best.pt``, k > 1 also ``top-epochNNNN.pt``, -1 all."""
    every_n_epochs: int | None = None
    """Also keep ``epoch-NNNN.pt`` every N epochs (``null``: never)."""


@dataclass
class EarlyStoppingConfig:
    """Stop when a validation metric stops improving (on once ``patience`` is set)."""

    monitor: str = "mean_dice"
    """Validation metric watched."""
    mode: str = "max"
    """``max`` when higher is better, ``min`` when lower is."""
    patience: int | None = None
    """Validations without improvement before stopping (``null``: never stop early)."""
    min_delta: float = 0.0
    """Smallest change that counts as an improvement."""


@dataclass
class TrainerConfig:
    """The training loop."""

    max_epochs: int = 100
    """Epochs to train."""
    steps_per_epoch: int = 100
    """Optimizer steps per epoch."""
    val_every: int = 1
    """Validate every N epochs (and always after the last)."""
    precision: Precision = Precision.bf16
    """fp32, bf16 (autocast; CPU and GPU) or fp16 (autocast with a gradient scaler; CUDA only)."""
    grad_clip: float | None = 12.0
    """Clip the global gradient norm to this value; ``null`` disables clipping."""
    device: str = "auto"
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    num_threads: int | None = None
    """torch intra-op threads on CPU (``null``: torch's default)."""
    deterministic: bool = False
    """Deterministic kernels, no cuDNN autotuning: same seed, same metrics.csv (docs/reliability.md)."""
    resume: str | None = None
    """Run dir or checkpoint to continue from."""
    val_overlap: float = 0.5
    """Sliding-window overlap during validation."""
    val_sw_batch_size: int = 4
    """Windows per forward pass during validation."""
    val_mirror: bool = False
    """Average each validation prediction over the flips along the axes training flips
    (``data.augmentation.flip_axes``: 8 flips, 8x the cost, for all three). ``predict``
    mirrors the run the same way by default (``sliding_window.mirror_axes=auto``)."""
    val_metrics: list[str] = field(default_factory=lambda: ["dice", "iou", "precision", "recall"])
    """Per-class metrics of every validation (a metrics.csv column per class); ``mean_dice``
    selects the best checkpoint, so ``dice`` must be among them."""
    final_val_metrics: list[str] = field(
        default_factory=lambda: ["dice", "iou", "precision", "recall", "hd95", "nsd"]
    )
    """Metrics of the last validation (surface distances cost about a second per case)."""
    val_tolerance_mm: float = 1.0
    """Tolerance of the normalized surface Dice (``nsd``), in mm."""
    max_time_minutes: float | None = None
    """Wall-time budget of training plus the final validation. The run is sized to its
    measured step time and to one validation case, timed before training starts; training
    stops once the budget is spent in any case, then validates and saves."""
    progress: bool = True
    """Show a progress bar of the steps of each epoch (only when stdout is a terminal)."""
    compile: bool = False
    """Wrap the model in ``torch.compile``."""
    pretrained: str | None = None
    """Checkpoint whose matching weights initialise the model (fine-tuning)."""
    freeze_encoder_epochs: int = 0
    """Fine-tuning: train only the decoder and heads for the first N epochs."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Checkpoint strategy: monitored metric, top k, every N epochs."""
    early_stopping: EarlyStoppingConfig | None = field(default_factory=EarlyStoppingConfig)
    """Stop when a monitored metric stalls: ``trainer.early_stopping.patience=10``."""
    max_bad_steps: int = 20
    """Stop after this many consecutive steps with a non-finite loss or gradient norm."""
    accumulate_grad_batches: int = 1
    """Batches whose gradients are summed (averaged) into one optimizer step."""
    log_images: bool = True
    """Log a middle-slice panel (image, label, prediction) of one case at every validation."""
    ema_decay: float | None = None
    """Keep an exponential moving average of the weights and validate with it (e.g. 0.999;
    warmed up as ``min(decay, (1 + step) / (10 + step))``)."""


@dataclass
class PathsConfig:
    """Where runs and caches live."""

    runs_dir: str = "runs"
    """Parent of every run dir."""
    data_dir: str = MISSING
    """Root of real datasets."""
    cache_dir: str = MISSING
    """Preprocessed-data cache."""
    output_dir: str = MISSING
    """This run's dir (Hydra's run dir)."""


@dataclass
class Config:
    """The whole experiment."""

    data: DataConfig = field(default_factory=DataConfig)
    model: Any = MISSING
    loss: Any = MISSING
    optimizer: Any = MISSING
    scheduler: Any = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: dict[str, Any] = field(default_factory=dict)
    paths: PathsConfig = field(default_factory=PathsConfig)
    seed: int = 42
    run_name: str = MISSING


@dataclass
class PredictConfig:
    """``python -m hybrid_unet.predict``: which runs, which scans, what to write."""

    checkpoints: Any = MISSING
    """Run dir or checkpoint, or a list of them (an ensemble: softmax outputs averaged)."""
    input: str = MISSING
    """NIfTI file or folder, DICOM series folder or folder of series, HDF5 file, dataset.json."""
    output: str = MISSING
    """Folder for the label maps, ``volumes.csv`` and ``summary.json``."""
    split: str = "test"
    """For a dataset.json input: ``test`` (its test list or imagesTs), ``training``, ``val``
    (the validation fold the runs share)."""
    device: str = "auto"
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    precision: Precision = Precision.fp32
    """fp32 or bf16 autocast for the forward passes."""
    num_threads: int | None = None
    """torch intra-op threads on CPU (``null``: torch's default)."""
    sliding_window: Any = MISSING
    """``_target_`` node building a :class:`hybrid_unet.inference.sliding_window.SlidingWindow`."""
    largest_component: Any = "auto"
    """Classes kept to their largest component, or ``auto``: the run's stored decision."""
    connectivity: int = 3
    """Neighbourhood of a connected component: 1 face, 2 edge, 3 corner (26-connected)."""
    mc_dropout_samples: int = 0
    """Predict N times per network with dropout active (Monte-Carlo dropout); 0: off."""
    save_probabilities: bool = False
    """Also write ``probabilities/<case>.npz`` (mean softmax, float16, on the scan's grid)."""
    save_uncertainty: bool = False
    """Also write ``uncertainty/<case>.nii.gz``: the members' disagreement (mutual
    information); needs several checkpoints or ``mc_dropout_samples`` >= 2."""
    class_names: list[str] | None = None
    """Names of classes 1..K-1 for volumes.csv; ``null``: the training dataset.json's labels."""


def register_configs() -> None:
    """Register the schemas so ``config.yaml`` and ``predict.yaml`` can extend them."""
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    cs.store(name="predict_schema", node=PredictConfig)

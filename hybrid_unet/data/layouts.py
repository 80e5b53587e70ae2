"""Dataset layouts on disk, detected automatically, turned into a list of case records.

Supported:

* **Decathlon** (as distributed by the Medical Segmentation Decathlon): ``dataset.json`` with a
  ``training`` list of ``{"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}``,
  ``labels`` ``{"0": "background", ...}`` and ``modality`` ``{"0": "MRI", ...}``; a multi-modal
  image is one 4D file. A listed image that only exists split into ``x_0000.nii.gz``, ... (the
  nnU-Net v1 conversion) is read channel by channel.
* **nnU-Net v2**: ``dataset.json`` with ``channel_names``, ``labels`` ``{"background": 0, ...}``,
  ``numTraining`` and ``file_ending``; ``imagesTr/<case>_<XXXX><file_ending>`` per channel and
  ``labelsTr/<case><file_ending>``, or the files each case lists under ``dataset``. The
  ``ignore`` label (voxels not annotated; it must be the highest value) is left out of the
  classes, of the loss and of every metric. Region labels (lists) are refused: they need
  per-region sigmoid outputs this project lacks.
* **HDF5**: one ``.h5`` file in the layout of :mod:`hybrid_unet.data.io.hdf5`; optional root
  attributes ``labels`` and ``modality`` hold the same JSON dicts as a Decathlon file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from hybrid_unet.data.errors import DataError
from hybrid_unet.data.io.folders import visible_entries
from hybrid_unet.data.io.hdf5 import list_hdf5_cases
from hybrid_unet.data.io.registry import IMAGE_READERS, known_suffix


@dataclass
class CaseRecord:
    """Where one case lives.

    Attributes:
        name: Case name, unique in the dataset.
        images: One path per channel file, or a single (possibly multi-channel) file.
        label: Label map path, or ``None`` for unlabelled cases.
        key: Group inside a container file (HDF5), else ``None``.
    """

    name: str
    images: list[Path]
    label: Path | None
    key: str | None = None


@dataclass
class DatasetLayout:
    """A dataset found on disk.

    Attributes:
        root: Dataset folder (or HDF5 file).
        kind: ``"decathlon"``, ``"nnunetv2"`` or ``"hdf5"``.
        cases: Labelled training cases, sorted by name.
        labels: Class value -> name, background included.
        modality: Channel index -> modality name (``"CT"``, ``"MRI"``, ...).
        ignore_label: Value of voxels left unannotated (nnU-Net v2's ``ignore``), or None.
    """

    root: Path
    kind: str
    cases: list[CaseRecord]
    labels: dict[int, str] = field(default_factory=dict)
    modality: dict[int, str] = field(default_factory=dict)
    ignore_label: int | None = None

    @property
    def meta_file(self) -> Path:
        """The file that declares the labels and modalities: ``dataset.json`` or the HDF5."""
        return self.root if self.kind == "hdf5" else Path(self.root) / "dataset.json"


def read_json(path: Path) -> dict:
    """``dataset.json`` as a dict; a missing, invalid or non-object file names the file."""
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(path, "dataset.json not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(path, f"invalid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise DataError(path, f"expected a JSON object, got {type(meta).__name__}")
    return meta


def _index_map(source: Path, meta: dict, key: str) -> dict[int, str]:
    """``{"0": "background", ...}`` as ``{0: "background"}``; names file and key when malformed."""
    value = meta.get(key, {})
    try:
        return {int(k): str(v) for k, v in value.items()}
    except (AttributeError, TypeError, ValueError):
        raise DataError(
            source, f"'{key}' must map integer strings to names, got {value!r}"
        ) from None


def _stem(path: str, ending: str) -> str:
    """The file name less ``ending`` or a known image suffix; other dots are part of the name
    (``sub-01.ses-1.nii`` is ``sub-01.ses-1``, not ``sub-01``)."""
    name = Path(path).name
    suffix = ending if name.lower().endswith(ending.lower()) else known_suffix(name)
    return name[: -len(suffix)] if suffix else name.split(".")[0]


def inside_root(root: Path, relative: object, where: str) -> Path:
    """``root / relative``, refusing paths that leave ``root`` (``../``, absolute paths).

    The check is on the path as written (symlinks inside the dataset are allowed), so a
    ``dataset.json`` from elsewhere cannot make training read ``../../etc/passwd``.

    Raises:
        DataError: naming ``dataset.json`` and the entry.
    """
    if not isinstance(relative, str) or not relative:
        raise DataError(root / "dataset.json", f"{where} must be a path string, got {relative!r}")
    joined = os.path.normpath(os.path.join(root, relative))
    base = os.path.normpath(root)
    if os.path.isabs(relative) or os.path.commonpath([base, joined]) != base:
        raise DataError(
            root / "dataset.json",
            f"{where} {relative!r} points outside the dataset folder; paths must stay inside it",
        )
    return Path(joined)


def listed_image_files(image: Path) -> list[Path]:
    """The files of an image that ``dataset.json`` lists: the file itself, or, when only the
    nnU-Net v1 conversion's channel files ``x_0000.nii.gz``, ... exist, those (a missing file
    is reported by whoever reads it)."""
    if image.exists():
        return [image]
    ending = ".nii.gz" if image.name.endswith(".nii.gz") else image.suffix
    split = sorted(image.parent.glob(f"{_stem(image.name, ending)}_[0-9][0-9][0-9][0-9]{ending}"))
    return split or [image]


def _decathlon(root: Path, meta: dict) -> DatasetLayout:
    meta_file = root / "dataset.json"
    cases = []
    training = meta["training"]
    if not isinstance(training, list):
        raise DataError(root / "dataset.json", "'training' must be a list of cases")
    for i, entry in enumerate(training):
        if not isinstance(entry, dict) or "image" not in entry:
            raise DataError(root / "dataset.json", f"training[{i}] needs an 'image' entry")
        images = listed_image_files(inside_root(root, entry["image"], f"training[{i}].image"))
        if not entry.get("label"):  # the Decathlon's unlabelled cases are listed under "test"
            raise DataError(root / "dataset.json", f"training[{i}] needs a 'label' entry")
        label = inside_root(root, entry["label"], f"training[{i}].label")
        cases.append(CaseRecord(_stem(entry["image"], ".nii.gz"), images, label))
    labels, modality = (
        _index_map(meta_file, meta, "labels"),
        _index_map(meta_file, meta, "modality"),
    )
    return DatasetLayout(root, "decathlon", sorted(cases, key=lambda c: c.name), labels, modality)


def _nnunetv2_labels(meta_file: Path, value: object) -> tuple[dict[int, str], int | None]:
    """``{"background": 0, ...}`` as ``{0: "background"}``, and the ``ignore`` label's value
    (None without one). Region labels (lists) are refused: trained as ordinary classes they
    would be learned wrong without a word."""
    if not isinstance(value, dict):
        raise DataError(meta_file, "'labels' must map names to integer values")
    labels, ignore = {}, None
    for name, number in value.items():
        if isinstance(number, list | tuple):
            raise DataError(meta_file, f"label {name!r} is a region {number} (a list of values): "
                                       "region-based training is not supported")  # fmt: skip
        if not isinstance(number, int) or isinstance(number, bool):
            raise DataError(meta_file, f"label {name!r} must be an integer, got {number!r}")
        if name == "ignore":
            ignore = number
        else:
            labels[number] = name
    if ignore is not None and labels and ignore <= max(labels):
        raise DataError(meta_file, f"label 'ignore' = {ignore} must be above every class value "
                                   f"(the highest is {max(labels)}), as in nnU-Net")  # fmt: skip
    return labels, ignore


def _nnunetv2_listed(root: Path, listed: object) -> list[CaseRecord]:
    """Cases of nnU-Net v2's ``"dataset": {case: {"images": [...], "label": ...}}``, paths
    relative to the dataset folder (and kept inside it, as Decathlon paths are)."""
    if not isinstance(listed, dict):
        raise DataError(root / "dataset.json", "'dataset' must map case names to their files")
    cases = []
    for name, entry in sorted(listed.items()):
        images = entry.get("images") if isinstance(entry, dict) else None
        if not isinstance(images, list) or not images or "label" not in entry:
            raise DataError(root / "dataset.json",
                            f"dataset[{name!r}] needs 'images' (a list) and 'label'")  # fmt: skip
        paths = [inside_root(root, p, f"dataset[{name!r}].images") for p in images]
        cases.append(CaseRecord(name, paths, inside_root(root, entry["label"],
                                                         f"dataset[{name!r}].label")))  # fmt: skip
    return cases


def _nnunetv2(root: Path, meta: dict) -> DatasetLayout:
    meta_file = root / "dataset.json"
    ending = meta.get("file_ending", ".nii.gz")
    known = [e for e in IMAGE_READERS if e != "/"]
    if not isinstance(ending, str) or ending.lower() not in known:
        raise DataError(meta_file, f"file_ending {ending!r} is not a format this project reads "
                                   f"(known: {', '.join(known)})")  # fmt: skip
    channels = _index_map(meta_file, meta, "channel_names")
    labels, ignore = _nnunetv2_labels(meta_file, meta.get("labels", {}))
    label_dir = root / "labelsTr"
    if "dataset" in meta:  # nnU-Net's explicit list of files, in place of the folder scan
        cases = _nnunetv2_listed(root, meta["dataset"])
    elif not label_dir.is_dir():
        raise DataError(label_dir, "labelsTr folder not found")
    else:
        cases = []
        for label in (p for p in visible_entries(label_dir) if p.name.endswith(ending)):
            name = label.name[: -len(ending)]
            images = [root / "imagesTr" / f"{name}_{c:04d}{ending}" for c in sorted(channels)]
            cases.append(CaseRecord(name, images, label))
    expected = meta.get("numTraining")
    if expected is not None and (not isinstance(expected, int) or isinstance(expected, bool)):
        raise DataError(meta_file, f"numTraining must be an integer, got {expected!r}")
    if expected is not None and expected != len(cases):
        if "dataset" in meta:
            raise DataError(meta_file, f"numTraining={expected} but 'dataset' lists {len(cases)}")
        raise DataError(label_dir, f"dataset.json says numTraining={expected}, found "
                                   f"{len(cases)} label file(s) ending in {ending!r}")  # fmt: skip
    return DatasetLayout(root, "nnunetv2", cases, labels, channels, ignore)


def _hdf5(root: Path) -> DatasetLayout:
    import h5py

    cases = [CaseRecord(n, [root], root, key=n) for n in list_hdf5_cases(root)]
    with h5py.File(root, "r") as f:
        if not cases:
            raise DataError(
                root,
                "wrong HDF5 layout: no case groups (expected one group per case holding "
                f"'image', 'label' and a 'spacing' attribute; top level has {sorted(f)})",
            )
        try:
            meta = {k: json.loads(f.attrs.get(k, "{}")) for k in ("labels", "modality")}
        except (TypeError, ValueError) as exc:
            raise DataError(
                root, f"root attributes 'labels'/'modality' are not JSON ({exc})"
            ) from None
    return DatasetLayout(
        root, "hdf5", cases, _index_map(root, meta, "labels"), _index_map(root, meta, "modality")
    )


def detect_layout(root: str | Path) -> DatasetLayout:
    """Find the layout of the dataset at ``root`` and list its labelled cases.

    Raises:
        DataError: ``root`` is missing, has no ``dataset.json``, or the file matches no layout.
    """
    root = Path(root)
    if root.is_file() and root.suffix.lower() in (".h5", ".hdf5"):
        return _hdf5(root)
    if not root.is_dir():
        raise DataError(
            root, "dataset folder not found (set data.source.root=... or HYBRID_UNET_DATA)"
        )
    meta = read_json(root / "dataset.json")
    if "channel_names" in meta:
        return _nnunetv2(root, meta)
    if "training" in meta:
        return _decathlon(root, meta)
    raise DataError(
        root / "dataset.json",
        "matches no known layout: expected 'training' (Decathlon) or 'channel_names' (nnU-Net v2)",
    )

"""What ``predict`` was pointed at, turned into one case record per scan.

* a NIfTI file, or a folder of them (nnU-Net channel files ``case_0000.nii.gz``,
  ``case_0001.nii.gz`` form one case when their suffixes run exactly 0000..n-1; any other
  ``_NNNN`` suffix is part of the case name);
* a DICOM series folder, or a folder whose subfolders are series (one case per series; NIfTI
  files beside them are cases too), or one ``.dcm`` file (an enhanced multi-frame series);
* an HDF5 file (one case per group, layout of :mod:`hybrid_unet.data.io.hdf5`), or a folder
  holding such files beside the other scans;
* a NumPy ``.npy`` (spacing from its ``.json`` sidecar) or ``.npz`` file, or a folder of them
  (one case per file, layout of :mod:`hybrid_unet.data.io.numpy_io`);
* a ``dataset.json`` (Decathlon or nnU-Net v2): its ``test`` list or ``imagesTs/`` (split
  ``test``), every training image (``training``), or a run's validation fold (``val``).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from hybrid_unet.data.errors import DataError
from hybrid_unet.data.io.folders import visible_entries
from hybrid_unet.data.io.hdf5 import list_hdf5_cases
from hybrid_unet.data.io.registry import known_suffix
from hybrid_unet.data.layouts import (
    CaseRecord,
    detect_layout,
    inside_root,
    listed_image_files,
    read_json,
)

_NIFTI = (".nii.gz", ".nii")
_NUMPY = (".npy", ".npz")
_HDF5 = (".h5", ".hdf5")
_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})\.(nii(\.gz)?|npy)$", re.IGNORECASE)


def _stem(path: Path) -> str:
    """The case name: the file name less its format suffix, in any case (SCAN.NII.GZ, as some
    converters write it), or less ``.dcm``."""
    name = path.name
    suffix = known_suffix(name) or (name[-4:] if name.lower().endswith(".dcm") else None)
    return name[: -len(suffix)] if suffix else name


def _channel_cases(files: list[Path]) -> list[CaseRecord]:
    """One case per file, except nnU-Net channel files (NIfTI or ``.npy``), grouped by case name.

    Files sharing a case name form one case only when their ``_NNNN`` suffixes are exactly
    ``0000`` .. ``n-1`` (``case_0000`` alone is case ``case``); otherwise the suffix is part of
    the name (``patient_0001.nii.gz`` and ``patient_0002.nii.gz`` are two patients).
    """
    groups: dict[str, list[tuple[int, Path]]] = defaultdict(list)
    cases = []
    for f in sorted(files):
        match = _CHANNEL.match(f.name)
        if match:
            groups[match["case"]].append((int(match["channel"]), f))
        else:
            cases.append(_one_case(f))
    for name, members in groups.items():
        if sorted(i for i, _ in members) == list(range(len(members))):
            cases.append(CaseRecord(name, [f for _, f in sorted(members)], None))
        else:
            cases += [_one_case(f) for _, f in members]
    return sorted(cases, key=lambda c: c.name)


def _one_case(path: Path) -> CaseRecord:
    """One file as one scan, named by its stem."""
    return CaseRecord(_stem(path), [path], None)


def _is_dicom_folder(folder: Path) -> bool:
    files = [p for p in visible_entries(folder) if p.is_file()]
    return any(p.suffix.lower() == ".dcm" for p in files) or any(
        _has_dicm_preamble(p) for p in files[:3]
    )


def _has_dicm_preamble(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False


def _folder_cases(folder: Path) -> list[CaseRecord]:
    """A DICOM series folder is one case; else its NIfTI, NumPy and HDF5 files and series
    subfolders."""
    if _is_dicom_folder(folder):
        return [CaseRecord(folder.name, [folder], None)]
    entries = visible_entries(folder)
    niftis = [p for p in entries if p.is_file() and p.name.lower().endswith(_NIFTI)]
    arrays = [p for p in entries if p.is_file() and p.name.lower().endswith(_NUMPY)]
    containers = [p for p in entries if p.is_file() and p.name.lower().endswith(_HDF5)]
    series = [p for p in entries if p.is_dir() and _is_dicom_folder(p)]
    npys = [p for p in arrays if p.name.lower().endswith(".npy")]
    cases = _channel_cases(niftis + npys) + [CaseRecord(p.name, [p], None) for p in series]
    cases += [_one_case(p) for p in arrays if p not in npys]
    cases += [case for p in containers for case in _hdf5_cases(p)]
    if cases:
        return sorted(cases, key=lambda c: c.name)
    if (folder / "dataset.json").is_file():
        return _dataset_cases(folder / "dataset.json", "test", None)
    raise DataError(folder, "holds no NIfTI, NumPy or HDF5 file, DICOM series or dataset.json")


def _test_cases(root: Path, meta: dict) -> list[CaseRecord]:
    listed = meta.get("test") if isinstance(meta.get("test"), list) else None
    if listed:
        # Entries are "./imagesTs/x.nii.gz" (the Decathlon) or {"image": ...}; like training
        # paths they must stay inside the dataset folder.
        paths = [
            inside_root(root, e.get("image") if isinstance(e, dict) else e, f"test[{i}]")
            for i, e in enumerate(listed)
        ]
        # A listed x.nii.gz may exist only as the nnU-Net v1 channel files x_0000.nii.gz, ...
        return _channel_cases([f for path in paths for f in listed_image_files(path)])
    images_ts = root / "imagesTs"
    if not images_ts.is_dir():
        raise DataError(root / "dataset.json", "no 'test' list and no imagesTs/ folder")
    scans = [p for p in visible_entries(images_ts) if p.name.lower().endswith(_NIFTI)]
    return _channel_cases(scans)


def _dataset_cases(path: Path, split: str, val_names: list[str] | None) -> list[CaseRecord]:
    root = path.parent
    if split == "test":
        return _test_cases(root, read_json(path))
    cases = [CaseRecord(c.name, c.images, None, c.key) for c in detect_layout(root).cases]
    if split == "training":
        return cases
    if val_names is None:
        raise DataError(path, "split 'val' needs the run's splits.json (a run dir checkpoint)")
    wanted = set(val_names)
    found = [c for c in cases if c.name in wanted]
    if not found:
        shown = ", ".join(sorted(wanted)[:3]) + (", ..." if len(wanted) > 3 else "")
        raise DataError(path, f"lists none of the run's {len(wanted)} validation cases "
                              f"({shown}): is it the dataset the run trained on?")  # fmt: skip
    return found


def _hdf5_cases(path: Path) -> list[CaseRecord]:
    return [CaseRecord(n, [path], None, key=n) for n in list_hdf5_cases(path)]


_FILE_KINDS: dict[str, Callable[[Path], list[CaseRecord]]] = {
    ".nii.gz": lambda p: _channel_cases([p]),
    ".nii": lambda p: _channel_cases([p]),
    ".npy": lambda p: [_one_case(p)],
    ".npz": lambda p: [_one_case(p)],
    ".h5": _hdf5_cases,
    ".hdf5": _hdf5_cases,
    ".dcm": lambda p: [_one_case(p)],  # an enhanced multi-frame file holds a whole series
}
SPLITS = ("test", "training", "val")


def find_cases(
    source: str | Path, split: str = "test", val_names: list[str] | None = None
) -> list[CaseRecord]:
    """Case records (``label=None``) for everything under ``source``.

    Args:
        source: File or folder, see the module docstring.
        split: For a ``dataset.json``: ``test``, ``training`` or ``val``.
        val_names: The validation case names used by split ``val``.

    Raises:
        DataError: ``source`` is missing, of an unknown kind, or holds no scan.
    """
    source = Path(source)
    if split not in SPLITS:
        raise DataError(source, f"unknown split {split!r} (known: {', '.join(SPLITS)})")
    if source.name == "dataset.json" and source.is_file():
        cases = _dataset_cases(source, split, val_names)
    elif source.is_dir():
        cases = _folder_cases(source)
    elif source.is_file():
        kind = next((k for k in _FILE_KINDS if source.name.lower().endswith(k)), None)
        if kind is None:
            raise DataError(source, "unknown input (NIfTI, HDF5, NumPy, .dcm, dataset.json or a "
                                    "folder)")  # fmt: skip
        cases = _FILE_KINDS[kind](source)
    else:
        raise DataError(source, "no such file or folder")
    if not cases:
        raise DataError(source, "no scan found")
    names = [c.name for c in cases]
    if clashes := sorted({n for n in names if names.count(n) > 1}):
        raise DataError(source, f"several scans are named {', '.join(clashes[:5])}: their "
                                "predictions would overwrite each other")  # fmt: skip
    return cases

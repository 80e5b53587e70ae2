"""Bad inputs through the training entry point: one clear error, exit 2, nothing left behind.

Every variant of the corpus (tests/fixtures/bad_inputs.py) runs ``python -m hybrid_unet.train``
in this process (the same ``main()``; a crash would come back as a traceback) and must end
with ``error: ...`` naming the file or key, exit code 2, no traceback, no run dir and no
checkpoint. Two variants also run as real subprocesses, as a user would start them.
"""

from __future__ import annotations

import pytest

from tests.fixtures.bad_inputs import CORPUS, all_inputs
from tests.helpers import run_train
from tests.reliability.harness import assert_one_error, cli

pytestmark = pytest.mark.reliability


def _params():
    return [
        pytest.param(
            bad, id=f"{kind}:{bad.name}", marks=pytest.mark.row("bad input", kind, expected)
        )
        for kind, expected, bad in all_inputs()
    ]


def _nothing_left(cwd) -> None:
    runs = cwd / "runs"
    assert not runs.exists() or not any(runs.iterdir()), "a failed start left a run dir"
    assert not list(cwd.rglob("*.pt")), "a failed start wrote a checkpoint"
    cache = [p for p in (cwd / "cache").rglob("*.npy")] if (cwd / "cache").exists() else []
    assert not cache, "a bad dataset was (partly) preprocessed"


@pytest.mark.parametrize("bad", _params())
def test_bad_input_is_refused_with_one_clear_error(bad, tmp_path, observe):
    args = bad.build(tmp_path)
    result = cli(args, tmp_path)
    message = assert_one_error(result, *bad.named(tmp_path))
    _nothing_left(tmp_path)
    observe(message.splitlines()[-1].replace(str(tmp_path), "…")[:110])


@pytest.mark.slow
@pytest.mark.row("bad input", "the same through a real subprocess",
                 "exit 2, 'error:' line naming the file or key, no traceback")  # fmt: skip
def test_bad_input_through_a_real_process(tmp_path, observe):
    bad = CORPUS["paths outside the dataset folder"][1][0]
    result = run_train(bad.build(tmp_path), tmp_path, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[0].startswith("error: "), result.stderr
    for text in bad.named(tmp_path):
        assert text in result.stderr
    _nothing_left(tmp_path)
    observe(f"{bad.name}: exit 2, {lines[0][:70]}")


@pytest.mark.row("bad input", "bad file read by a worker process (validation off)",
                 "the worker's error crosses the process boundary naming the file")  # fmt: skip
def test_error_in_a_reader_process_names_the_file(tmp_path, observe):
    bad = CORPUS["truncated .nii.gz"][1][0]
    args = [a for a in bad.build(tmp_path) if not a.startswith("data.source.num_workers")]
    result = cli([*args, "data.source.num_workers=2", "+data.source.validate=false"], tmp_path)
    assert "BrokenProcessPool" not in result.stderr
    assert_one_error(result, *bad.named(tmp_path))
    assert not [p for p in (tmp_path / "cache").rglob("*") if ".tmp" in p.name]
    observe("fingerprint worker hit the truncated file: one error naming it")


@pytest.mark.row("bad input", "bad case added to a preprocessed dataset",
                 "refused, naming the file; the existing cache is kept untouched")  # fmt: skip
def test_bad_case_added_keeps_the_existing_cache(tmp_path, observe):
    import json

    from hybrid_unet.data.real import DatasetSource

    bad = CORPUS["label values outside the declared classes"][1][0]
    args = bad.build(tmp_path)  # case_001's label holds an undeclared 7
    root, cache = tmp_path / "data", tmp_path / "cache"
    listing = (root / "dataset.json").read_text()
    meta = json.loads(listing)
    meta["training"] = [e for e in meta["training"] if "case_001" not in e["image"]]
    (root / "dataset.json").write_text(json.dumps(meta))
    DatasetSource(root, cache, num_classes=3, num_workers=0)  # the good cases, preprocessed
    before = {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()}
    (root / "dataset.json").write_text(listing)  # then case_001 arrives
    label = root / "labelsTr" / "case_001.nii.gz"
    result = cli(args, tmp_path)
    assert_one_error(result, str(label), "[7] are not declared")
    after = {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()}
    assert {p: after.get(p) for p in before} == before, "preprocessed files were lost or rewritten"
    observe("label changed after preprocessing: refused, cache intact")


@pytest.mark.row("bad input", "scripts/check_dataset.py on a dataset with many problems",
                 "lists every problem, one line each naming its file, exit 1")  # fmt: skip
def test_check_dataset_lists_every_problem(tmp_path, capsys, observe):
    from scripts.check_dataset import main

    kinds = ["NaN / Inf voxels", "image/label shape mismatch", "listed file missing",
             "label values outside the declared classes"]  # fmt: skip
    dests = []
    for i, kind in enumerate(kinds):  # each breaks case_001 of its own copy; merge into one
        dests.append(tmp_path / str(i))
        CORPUS[kind][1][0].build(dests[-1])
    root = dests[0] / "data"
    for i, dest in enumerate(dests[1:], start=1):  # copy case_001 of copy i in as case_00{i+1}
        for sub in ("imagesTr", "labelsTr"):
            src = dest / "data" / sub / "case_001.nii.gz"
            if src.exists():
                (root / sub / f"case_00{i + 1}.nii.gz").write_bytes(src.read_bytes())
            else:
                (root / sub / f"case_00{i + 1}.nii.gz").unlink(missing_ok=True)
    import json

    meta = json.loads((root / "dataset.json").read_text())
    meta["training"] = [{"image": f"./imagesTr/case_00{i}.nii.gz",
                         "label": f"./labelsTr/case_00{i}.nii.gz"} for i in range(5)]  # fmt: skip
    (root / "dataset.json").write_text(json.dumps(meta))
    assert main([str(root), "--workers", "0"]) == 1
    out = capsys.readouterr().out
    assert "4 problem(s)" in out and "Traceback" not in out
    for i in (1, 2, 3, 4):
        assert f"case_00{i}.nii.gz" in out, out
    observe("4 broken cases: 4 problems listed, each naming its file", cases=4)


@pytest.mark.row("bad input", "data.in_channels disagrees with the dataset's channels",
                 "names the key and the dataset's count; no run dir left")  # fmt: skip
def test_in_channels_that_disagree_with_the_dataset_name_the_key(tmp_path, observe):
    import json

    from tests.data.conftest import write_decathlon
    from tests.fixtures.bad_inputs import train_args

    root = write_decathlon(tmp_path / "data", num_cases=3, shape=(16, 16, 16), channels=2)
    meta = json.loads((root / "dataset.json").read_text())
    meta["modality"] = {"0": "T1", "1": "T2"}
    (root / "dataset.json").write_text(json.dumps(meta))
    result = cli(train_args(root, tmp_path / "cache"), tmp_path)  # data.in_channels stays 1
    message = assert_one_error(result, "'data.in_channels' is 1", "have 2 channels")
    runs = tmp_path / "runs"
    assert not runs.exists() or not any(runs.iterdir()), "a failed start left a run dir"
    observe(message.splitlines()[-1][:110])

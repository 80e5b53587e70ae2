"""The train command adds overrides of its own (sweep callback, resume, torchrun) next to the
user's, where Hydra accepts them: one run of positional arguments, flags before or after."""

from __future__ import annotations

import pytest

from hybrid_unet.train import sweep_argv, with_overrides


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["a=1", "b=2"], ["x=0", "a=1", "b=2", "z=9"]),
        (["-m", "a=1", "b=2", "--cfg", "job"], ["-m", "x=0", "a=1", "b=2", "z=9", "--cfg", "job"]),
        (["--cfg", "job", "a=1"], ["--cfg", "job", "x=0", "a=1", "z=9"]),
        (["-cn", "other", "a=1"], ["-cn", "other", "x=0", "a=1", "z=9"]),
        (["a=1", "--info", "defaults"], ["x=0", "a=1", "z=9", "--info", "defaults"]),
        (["--cfg", "job"], ["x=0", "z=9", "--cfg", "job"]),
        ([], ["x=0", "z=9"]),
    ],
)
def test_overrides_join_the_users_own(argv, expected):
    assert with_overrides(argv, before=["x=0"], after=["z=9"]) == expected


def test_a_sweep_with_a_flag_after_its_overrides_keeps_one_run_of_overrides():
    argv = sweep_argv(["-m", "+preset=quick_test", "loss=dice,dice_ce", "--info", "searchpath"])
    assert argv == ["-m", "+preset=quick_test", "loss=dice,dice_ce", "hydra/callbacks=sweep_summary",
                    "--info", "searchpath"]  # fmt: skip


def test_help_says_what_train_does_with_examples_that_compose(tmp_path):
    """``--help`` began "train is powered by Hydra." with no description or example."""
    from tests.helpers import cli

    result = cli(["--help"], tmp_path)
    assert result.code == 0 and result.stdout.startswith("Train a segmentation network")
    examples = [line.split("train", 1)[1].split("#")[0].split()
                for line in result.stdout.splitlines() if "python -m hybrid_unet.train" in line]  # fmt: skip
    assert len(examples) == 5
    for args in examples:  # each composes (--cfg job prints the config; a sweep's first job)
        args = [a.split(",")[0] for a in args if a != "-m"]
        if not any(a.startswith("trainer.resume") for a in args):
            assert cli([*args, "--cfg", "job"], tmp_path).code == 0, args

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

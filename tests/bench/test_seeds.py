"""bench/seeds.py: the across-seed summary the reproduction drivers print (hand-computed cases)."""

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("bench_seeds", Path(__file__).resolve().parents[2] / "bench" / "seeds.py")
seeds = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(seeds)


def test_fmt_three_seeds():
    # mean 2, half-width t_{0.975,2} * 1 / sqrt(3) = 2.484
    assert seeds.fmt([1.0, 2.0, 3.0], 2) == "2.00 [-0.48, 4.48]"
    assert seeds.fmt([0.5], 2) == "0.50"


@pytest.mark.parametrize(("changes", "sign", "expected"), [
    ([-1.9, -2.0, -2.1], -1, True),    # tight and below zero
    ([-1.9, -2.0, -2.1], +1, False),
    ([0.2, -0.1, 0.3], +1, False),     # mean above zero, interval straddles it
    ([0.20, 0.21, 0.19], +1, True),
])
def test_direction(changes, sign, expected):
    assert seeds.direction(changes, sign) is expected


def test_verdict():
    assert seeds.verdict([True, True]) == "shown"
    assert seeds.verdict([True, False]) == "partly"
    assert seeds.verdict([False, False]) == "not shown"


def test_llmgen_command_appends_overrides():
    argv = seeds.llmgen_command("instruction-diversity sweep", "c.yaml", ["train.seed=1"])
    assert argv[1:] == ["instruction-diversity", "sweep", "--config", "c.yaml", "train.seed=1"]
    assert Path(argv[0]).name == "llmgen"

"""bench/npo_unlearning.py: every stage's CLI call builds a valid config from the committed cpu.yaml."""

import importlib.util
import sys
from pathlib import Path

import pytest

from llmgen.config import load_config
from llmgen.recipes.npo_unlearning import UnlearnConfig

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def driver():
    sys.path.insert(0, str(BENCH))  # the driver imports its sibling seeds.py
    try:
        spec = importlib.util.spec_from_file_location("bench_npo_unlearning", BENCH / "npo_unlearning.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.path.remove(str(BENCH))


def _config(argv: list[str]) -> tuple[str, UnlearnConfig]:
    """The stage and the UnlearnConfig ``llmgen npo-unlearning`` would build from ``argv``."""
    assert argv[1] == "npo-unlearning" and argv[2] == "--config"
    rest, stage = argv[4:], "unlearn"
    if rest[:1] == ["--stage"]:
        stage, rest = rest[1], rest[2:]
    cfg = load_config(UnlearnConfig, argv[3], rest)
    cfg.validate()
    return stage, cfg


def test_stages_from_committed_config(driver, tmp_path):
    runs = tmp_path / "runs"
    stage, retain = _config(driver.stage_argv(driver.CONFIG, runs, None, "retain-logs", []))
    assert stage == "retain-logs" and retain.retain_logs == str(runs / "retain_logs.json")
    stage, ft = _config(driver.stage_argv(driver.CONFIG, runs, 2, "finetune", []))
    assert stage == "finetune" and ft.finetune.seed == 2 and ft.output_dir == str(runs / "seed2")
    # retain-logs and finetune both write <output_dir>/model: they must not share a folder
    assert retain.output_dir != ft.output_dir
    stage, un = _config(driver.stage_argv(driver.CONFIG, runs, 2, "unlearn", []))
    assert stage == "unlearn" and un.train.seed == 2 and un.model == str(runs / "seed2" / "model")
    assert un.retain_logs == retain.retain_logs and un.output_dir == str(runs / "seed2" / "unlearn")
    # the reference schedule the issue fixes (lr 1e-5, effective batch 32, warm-up + linear, wd 0.01)
    t = un.train
    assert (t.lr, t.batch_size * t.grad_accum, t.schedule, t.weight_decay, un.warmup_epochs) == (1e-5, 32, "linear",
                                                                                                0.01, 1.0)
    assert un.methods == list(driver.METHODS)

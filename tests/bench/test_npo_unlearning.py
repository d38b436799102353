"""bench/npo_unlearning.py: every stage's CLI call builds a valid config from the committed cpu.yaml."""

import importlib.util
import math
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
    stage, retain = _config(driver.stage_argv(driver.CONFIG, runs, 0, "retain-logs", []))
    assert stage == "retain-logs" and retain.retain_logs == str(runs / "retain_logs.json")
    stage, ft = _config(driver.stage_argv(driver.CONFIG, runs, 0, "finetune", []))
    assert stage == "finetune" and ft.finetune.seed == 0
    # retain-logs and finetune both write <output_dir>/model: they must not share a folder
    assert retain.output_dir != ft.output_dir
    stage, first = _config(driver.stage_argv(driver.CONFIG, runs, 0, "unlearn", [], first=0))
    assert stage == "unlearn" and first.model == str(Path(ft.output_dir) / "model")
    assert first.retain_logs == retain.retain_logs and first.methods == ["ga", "npo", "npo_rt"]
    # the reference schedule (lr 1e-5, warm-up epoch + linear decay, wd 0.01, 10 epochs) with the batch
    # scaled to the 8-question forget set so the run takes TOFU forget01's ~12 optimizer steps
    # (10 * 40 // 32) instead of 3: each step's batch holds the whole forget set
    t = first.train
    assert (t.lr, t.schedule, t.weight_decay, first.warmup_epochs, t.epochs) == (1e-5, "linear", 0.01, 1.0, 10.0)
    forget = 8  # forget01 of the synthetic set: its last author's 8 facts (SyntheticTofuConfig)
    steps = math.ceil(t.epochs * math.ceil(forget / t.batch_size) / t.grad_accum)  # llmgen.training.loop's count
    assert t.batch_size >= forget and 10 <= steps <= 12
    _, later = _config(driver.stage_argv(driver.CONFIG, runs, 2, "unlearn", [], first=0))
    assert later.train.seed == 2 and later.output_dir != first.output_dir and later.model == first.model


def test_later_seeds_train_only_seed_dependent_methods(driver):
    """GA and NPO read the forget stream alone: with the forget set inside one batch, train.seed
    cannot change them, so only NPO+RT (forget + retain streams) is rerun for later seeds."""
    from llmgen.training.losses.unlearning import get_method

    assert [len(get_method(m).streams) for m in ("ga", "npo", "npo_rt")] == [1, 1, 2]
    assert driver.seed_methods(1, first=0) == ["npo_rt"]
    assert driver.seed_methods(0, first=0) == ["ga", "npo", "npo_rt"]
    # ... which holds only while the committed config's forget split fits in one micro-batch
    from llmgen.recipes.npo_unlearning import data_source
    from llmgen.tasks.tofu import forget_config, load_tofu

    cfg = load_config(UnlearnConfig, driver.CONFIG)
    assert len(load_tofu(data_source(cfg), forget_config(cfg.forget_split))) <= cfg.train.batch_size

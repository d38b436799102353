"""bench/confidence_limiting.py: the seed driver's CLI call and its checks of the target shape
(hand-made pass@k numbers; no model runs here)."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sys.path.insert(0, str(BENCH))  # the driver imports its sibling `seeds`
driver = _load("confidence_limiting")
KS = [1, 2, 4, 8, 16, 32, 64]


def test_seed_argv_builds_from_committed_config(tmp_path):
    from llmgen.config import load_config
    from llmgen.recipes.confidence_limiting import ConfidenceLimitingConfig

    argv = driver.seed_argv(driver.CONFIG, 2, tmp_path / "seed2")
    assert Path(argv[0]).name == "llmgen"
    assert argv[1:4] == ["confidence-limiting", "--config", str(driver.CONFIG)]
    config = load_config(ConfidenceLimitingConfig, argv[3], argv[4:])
    config.validate()
    assert config.train.seed == 2 and config.output_dir == str(tmp_path / "seed2")
    # the method the issue asks for: pretrained model, per-batch F with refill, k up to 64 samples
    assert (config.model, config.refill, tuple(config.methods)) == ("default", True, ("ce", "dco"))
    assert config.kvalues() == KS and config.eval.num_samples == 64


def _run(seed: int, ce: dict[float, float], dco: dict[float, float]) -> dict:
    """A results.json with the same pass@k at every k (enough for the checks)."""
    def rows(values):
        return [{"epoch": e, "step": round(4 * e), "passk": {str(k): {"unbiased": v} for k in KS}, "greedy_accuracy": v,
                 "confidence_incorrect": None, "overconfident_wrong": 0.0, "distinct_answers": 5.0,
                 "train": {"mean_loss": 1.0, "refill_dropped": 3} if e else {}} for e, v in values.items()]
    config = {"dco_n": 16, "difficulty": 2, "task_seed": 0, "dco_threshold": 0.1,
              "eval": {"num_samples": 64, "temperature": 1.0, "max_new_tokens": 8},
              "train": {"epochs": 3, "lr": 1e-4, "batch_size": 8, "warmup_steps": 2, "weight_decay": 0.0}}
    return {"seed": seed, "ks": KS, "n_train": 32, "n_test": 12, "config": config, "wall_s": 600.0,
            "methods": {"ce": rows(ce), "dco": rows(dco)}}


def test_claims_follow_the_per_seed_differences():
    # CE falls 0.8 -> 0.6 in every seed; DCO above CE by 0.05 +- 0.01 at epochs 2, 3, tied at epoch 1
    # seed 2's DCO run ends early (refill): its end-of-training row (epoch 2.75) stands at epoch 3
    runs = [_run(s, {0: 0.5, 1: 0.8 + d, 2: 0.7 + d, 3: 0.6 + d},
                 {0: 0.5, 1: 0.8 + d, 2: 0.75 + 2 * d, (3 if s < 2 else 2.75): 0.65 + 2 * d})
            for s, d in enumerate((0.0, 0.01, -0.01))]
    assert driver.curves(runs)[1] == [0, 1, 2, 3]
    checks = driver.claims(runs, [16, 64])
    falls, above = checks.values()
    assert all(ok for _, ok in falls.values())
    assert falls["pass@64, CE epoch 1 → 3"][0] == pytest.approx([-0.2, -0.2, -0.2])
    assert above["pass@16, DCO - CE at epoch 1"] == ([0.0, 0.0, 0.0], False)
    assert above["pass@64, DCO - CE at epoch 3"][0] == pytest.approx([0.05, 0.06, 0.04])
    assert above["pass@64, DCO - CE at epoch 3"][1] is True
    assert driver.overall_verdict(["shown", "partly"]) == "partly"
    assert driver.overall_verdict(["not shown", "not shown"]) == "not shown"


def test_report_keeps_the_earlier_runs(tmp_path):
    runs = [_run(s, {0: 0.5, 1: 0.6, 2: 0.6 + s / 100, 3: 0.7}, {0: 0.5, 1: 0.5, 2: 0.5, 3: 0.5 + s / 100})
            for s in range(3)]
    section, summary = driver.report(runs, str(driver.CONFIG), ["a.png"], 1800.0)
    assert "**Result: not shown.**" in section and "| ce | 3 |" in section
    assert summary.startswith("**not shown**") and "driver 30 min" in summary
    doc = tmp_path / "doc.md"
    doc.write_text("old section\n" + driver.MARK + "\n## earlier\nkept\n", encoding="utf-8")
    driver.write_doc(doc, section)
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("# pass@N / DCO") and "old section" not in text and text.endswith("## earlier\nkept\n")

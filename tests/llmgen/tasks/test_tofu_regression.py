"""Regression check of the TOFU task on the runner: the numbers the old code path
(``evals.tofu.tofu_eval`` behind ``Task.evaluator``) computed on the tiny model, pinned in
``fixtures/tofu_old_path.json``, come out again from ``llmgen eval --tasks tofu_*`` and from the
recipe's retain logs. The independent references (transformers, scipy, rouge-score) are in
test_tofu_metrics.py and test_eval.py; this only guards against a silent change of numbers.

The tolerance is float32 noise: the runner sends all of a task's loglikelihood requests in one
call where the old path sent one call per set and answer kind, so the HF backend's batches (and
their padding) differ; generations are compared exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmgen.evaluate import EvalConfig, run_eval

HERE = Path(__file__).parents[2]  # tests/
OLD = json.loads((HERE / "fixtures" / "tofu_old_path.json").read_text())


def _check_rows(rows: list[dict], pinned: list[dict]) -> None:
    by_id = {r["doc_id"]: r for r in rows}
    for p in pinned:
        r = by_id[p["doc_id"]]
        assert r["split"] == p["split"] and r["responses"][0].strip() == p["response"]
        assert r["metrics"] == pytest.approx(p["metrics"], rel=1e-5, abs=1e-9)


def test_tofu_eval_task_numbers_are_the_old_paths(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("LLMGEN_CACHE", str(tmp_path))
    monkeypatch.setenv("LLMGEN_TOFU_DATA", str(HERE / "fixtures" / "tofu"))
    out = run_eval(EvalConfig(model=tiny_model_dir, tasks=["tofu_forget10"], limit=5, max_new_tokens=8, cache=None),
                   show_progress=False)
    assert len(out["samples"]) == 20
    _check_rows(out["samples"], OLD["real_forget10"]["samples"])

    monkeypatch.delenv("LLMGEN_TOFU_DATA")
    out = run_eval(EvalConfig(model=tiny_model_dir, tasks=["tofu_forget01"], limit=4, max_new_tokens=8, cache=None),
                   show_progress=False)
    _check_rows(out["samples"], OLD["synthetic_forget01"]["samples"])
    res = out["results"]["tofu_forget01"]
    assert set(res) == set(OLD["synthetic_forget01"]["results"])  # no counts among the metrics
    assert res == pytest.approx(OLD["synthetic_forget01"]["results"], rel=1e-4, abs=1e-7)
    assert out["tasks"]["tofu_forget01"]["counts"] == {"forget": 4, "retain": 4, "real_authors": 4, "world_facts": 4}


def test_retain_logs_are_the_old_paths(tiny_model_dir, tmp_path):
    from llmgen.recipes.npo_unlearning import make_retain_logs
    from llmgen.tasks.tofu import SyntheticTofuConfig, write_synthetic_tofu

    data = str(write_synthetic_tofu(tmp_path / "tofu", SyntheticTofuConfig(n_authors=3, retain_eval_size=3)))
    logs = json.loads(Path(make_retain_logs(tiny_model_dir, data, "forget10", str(tmp_path / "rl.json"), eval_limit=3,
                                            max_new_tokens=4)).read_text())
    assert logs["forget_truth_ratios"] == pytest.approx(OLD["retain_logs"]["forget_truth_ratios"], rel=1e-5)
    # the per-example rows are the runner's samples.jsonl rows
    assert [r["metrics"]["truth_ratio"] for r in logs["rows"]] == logs["forget_truth_ratios"]
    assert {"task", "doc_id", "prompt", "target", "responses", "metrics", "split"} <= set(logs["rows"][0])

"""``llmgen eval --tasks tofu_forget10 --formats K``: TOFU's metrics per prompt format, on real TOFU rows.

The rows are TOFU's own (``tests/fixtures/tofu``: the first rows of locuslab/TOFU's files, the files of
``../shared/data/tofu`` byte for byte); the
model is the tiny random-init one the other TOFU tests use. Format 0 must be the plain run, request
for request and metric for metric; the other formats vary only the question's spelling.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from llmgen.errors import LlmgenError
from llmgen.evaluate import EvalConfig, run_eval
from llmgen.prompts.format_eval import run_format_eval
from llmgen.prompts.formats import Format
from llmgen.prompts.request_formats import metric_intervals, render_fields, request_formats, request_layout
from llmgen.tasks.tofu import load_eval_sets, tofu_task
from tests.cli.test_cli import assert_one_error, llmgen

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "tofu"
DATA = FIXTURE  # TOFU's own first rows, byte for byte the files of ../shared/data/tofu
K = 3


@pytest.fixture
def tofu_env(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMGEN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LLMGEN_TOFU_DATA", str(DATA))
    monkeypatch.delenv("LLMGEN_TOFU_RETAIN_LOGS", raising=False)
    return tmp_path


def _config(model: str, out: Path | None = None, limit: int = 2) -> EvalConfig:
    return EvalConfig(model=model, tasks=["tofu_forget10"], limit=limit, max_new_tokens=4, cache=None,
                      output_dir=str(out) if out else None)


def test_question_formats_on_real_rows():
    """The layout is TOFU's question and answer descriptors; format 0 keeps the bare question, the
    others spell it in the grammar, and the answers (gold, paraphrase, perturbed) are untouched."""
    task = tofu_task(DATA, "forget10", ds_size=2)
    layout = request_layout(task)
    assert [(f.descriptor, f.key) for f in layout.fields] == [("Question", "question")] and layout.output == "Answer"
    formats = request_formats(task, 5, seed=0)
    assert formats[0] is None and formats[1] == Format.original() and len(set(formats[1:])) == 4
    doc = task.docs[0]
    assert render_fields(doc, None, layout) is doc
    assert render_fields(doc, formats[1], layout)["question"] == f"Question: {doc['question']}\nAnswer:"
    for fmt in formats[1:]:
        varied = render_fields(doc, fmt, layout)
        assert doc["question"] in varied["question"] and varied["question"] != doc["question"]
        assert {k: v for k, v in varied.items() if k != "question"} == {k: v for k, v in doc.items() if k != "question"}
    assert request_formats(task, 1, seed=0) == [None]
    two = copy.copy(task)
    two.input_fields = [("Question", "question"), ("Answer", "answer")]
    with pytest.raises(LlmgenError, match="needs exactly one input field"):
        request_layout(two)


def test_format_zero_is_the_plain_tofu_run(tiny_model_dir, tofu_env):
    """Same prompts, same rows, same metric values as `llmgen eval --tasks tofu_forget10`; every
    format reports every TOFU metric with a seeded 95% bootstrap interval, in --formats' schema."""
    plain = run_eval(_config(tiny_model_dir), show_progress=False)
    run = tofu_env / "run"
    out = run_format_eval(_config(tiny_model_dir, run), K, show_progress=False)
    assert out["results"]["tofu_forget10"] == plain["results"]["tofu_forget10"]
    strip = lambda rows: [{k: v for k, v in r.items() if k != "format_id"} for r in rows]  # noqa: E731
    assert strip(out["samples"]) == plain["samples"]

    entry = json.loads((run / "results.json").read_text())["format_spread"]["tofu_forget10"]
    metrics = set(plain["results"]["tofu_forget10"])
    assert {"model_utility", "forget.prob", "forget.rougeL", "forget.truth_ratio"} <= metrics
    assert [f["format_id"] for f in entry["formats"]] == list(range(K)) and entry["formats"][0]["format"] == "{}"
    assert entry["formats"][0]["metrics"] == plain["results"]["tofu_forget10"]
    for f in entry["formats"]:
        assert set(f["metrics"]) == metrics == set(f["uncertainty"])
        for m, u in f["uncertainty"].items():
            assert u["value"] == f["metrics"][m] and u["ci_low"] <= u["ci_high"]
        assert f["uncertainty"]["forget.prob"]["ci_low"] <= f["metrics"]["forget.prob"] <= f["uncertainty"]["forget.prob"]["ci_high"]
    for m, s in entry["summary"].items():
        vals = [f["metrics"][m] for f in entry["formats"]]
        assert s["original"] == vals[0] and s["min"] == min(vals) and s["max"] == max(vals) and s["formats"] == K
    # the intervals are seeded: the same rows give the same intervals
    task = tofu_task(DATA, "forget10", ds_size=2)
    assert metric_intervals(task, out["samples"], sorted(metrics), seed=0) == entry["formats"][0]["uncertainty"]

    rows = [json.loads(line) for line in (run / "format_samples.jsonl").read_text().splitlines()]
    n = len(plain["samples"])
    assert len(rows) == K * n and [r["format_id"] for r in rows] == [i for i in range(K) for _ in range(n)]
    docs = {(r["split"], r["doc_id"]): r for r in plain["samples"]}
    for r in rows[n:]:  # a varied question, the same document, target and split
        base = docs[(r["split"], r["doc_id"])]
        assert r["target"] == base["target"] and r["prompt"] != base["prompt"]
    formats_file = json.loads((run / "formats_tofu_forget10.json").read_text())
    assert formats_file["formats"][0] is None and formats_file["templates"][1] == "Question: {}\nAnswer: {}"
    assert (run / "samples.jsonl").read_text().count("\n") == n


def test_forget_quality_per_format_against_the_retain_logs(tiny_model_dir, tofu_env, monkeypatch):
    """Forget quality is reported per format, each against the same retain-model truth ratios."""
    from llmgen.evals.tofu import forget_quality

    ratios = [0.5, 0.8, 1.1, 1.4]
    logs = tofu_env / "retain_logs.json"
    logs.write_text(json.dumps({"forget_truth_ratios": ratios}))
    monkeypatch.setenv("LLMGEN_TOFU_RETAIN_LOGS", str(logs))
    out = run_format_eval(_config(tiny_model_dir, limit=1), 2, show_progress=False)
    entry = out["format_spread"]["tofu_forget10"]
    assert "forget_quality" in entry["summary"]
    rows = [r for r in [json.loads(json.dumps(r)) for r in out["samples"]] if r["split"] == "forget"]
    assert entry["formats"][0]["metrics"]["forget_quality"] == pytest.approx(
        forget_quality([r["metrics"]["truth_ratio"] for r in rows], ratios))
    for f in entry["formats"]:
        u = f["uncertainty"]["forget_quality"]
        assert 0 <= u["ci_low"] <= u["ci_high"] <= 1


def test_refusals_before_any_model_loads(tofu_env):
    """The bandit (0/1 outcomes) and a run mixing TOFU with a fields task are one error line each,
    before the (missing) model is loaded."""
    missing = str(tofu_env / "no-model")
    with pytest.raises(LlmgenError, match="--format-budget needs a 0/1 outcome"):
        run_format_eval(_config(missing), 3, budget=40, show_progress=False)
    mixed = EvalConfig(model=missing, tasks=["tofu_forget10", "sentiment"], limit=2, cache=None)
    with pytest.raises(LlmgenError, match="run 'sentiment' in its own --formats run"):
        run_format_eval(mixed, 3, show_progress=False)
    r = llmgen("eval", "--model", missing, "--tasks", "tofu_forget10", "--formats", "3", "--format-budget", "40",
               "--output-dir", str(tofu_env / "cli"), env={"LLMGEN_TOFU_DATA": str(DATA)})
    assert_one_error(r, "--format-budget needs a 0/1 outcome")


def test_load_eval_sets_are_the_real_rows():
    """The rows varied here are TOFU's own (not a schema assumed by the test)."""
    sets = load_eval_sets(DATA, "forget10", 2)
    assert sets["forget"][0]["question"].startswith("What is the full name of the author born in Taipei")
    assert len(sets["forget"][0]["perturbed_answer"]) == 5

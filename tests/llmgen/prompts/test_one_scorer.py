"""One scorer per metric: format 0 of ``llmgen eval --formats K`` equals the plain run row for row.

Both paths score a document through the same code (``Task.score_responses`` / ``score_choices`` →
``llmgen.tasks.scoring``: the filters, the metric registry, pass@k), so the original format's rows
(prompts, responses, per-document metrics) and corpus metrics are plain ``llmgen eval``'s. Before
this, ``--formats`` scored every metric as the mean of ``is_correct``, which switched to substring
matching when ``contains`` was listed (exact_match 1.0 for " The capital of Egypt is Cairo.") and
ignored reducing filters (majority_vote).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from llmgen.evaluate import EvalConfig, run_eval
from llmgen.prompts.format_eval import run_format_eval
from llmgen.tasks import Task, outcome_metric

ROOT = Path(__file__).resolve().parents[3]
CAPITALS = ROOT / "docs" / "examples" / "capitals.jsonl"
ARITH = ROOT / "docs" / "examples" / "tasks" / "lmeval" / "data" / "arith.jsonl"
# what a row of each path must agree on (the --formats row adds format_id and, ranked, continuations)
KEYS = ("task", "doc_id", "prompt", "target", "responses", "metrics", "correct")


def write_task(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\n" + body)
    return str(path)


def both_runs(model_dir: str, backend, task: str, tmp_path: Path, **settings) -> tuple[dict, dict]:
    plain = run_eval(EvalConfig(model=model_dir, tasks=[task], cache=None, **settings), backend=backend,
                     show_progress=False)
    formats = run_format_eval(EvalConfig(model=model_dir, tasks=[task], cache=None,
                                         output_dir=str(tmp_path / "run"), **settings),
                              num_formats=2, backend=backend, show_progress=False)
    return plain, formats


def assert_rows_equal(plain: dict, formats: dict) -> None:
    name = next(iter(plain["results"]))
    assert formats["results"][name] == plain["results"][name]
    ours = [{k: r[k] for k in KEYS} for r in formats["samples"]]
    assert ours == [{k: r[k] for k in KEYS} for r in plain["samples"]]
    summary = formats["format_spread"][name]["summary"]
    assert {m: s["original"] for m, s in summary.items()} == plain["results"][name]


def test_contains_does_not_change_exact_match():
    """The issue's case by hand: exact_match compares the stripped response, contains the substring."""
    doc = {"country": "Egypt", "capital": "Cairo"}
    task = Task(name="capitals", docs=[doc], input_fields=[("Country", "country")], output_descriptor="Capital",
                target_key="capital", metrics=("exact_match", "contains"))
    correct, metrics = task.score_responses([" The capital of Egypt is Cairo.", " Cairo"], 0)
    assert metrics == {"exact_match": 0.5, "contains": 1.0}
    assert correct == [False, True] and outcome_metric(task.metrics) == "exact_match"
    # contains first: the outcome (pass@k's count, the bandit's reward) is contains
    first = Task(name="c", docs=[doc], target_key="capital", input_fields=[("Country", "country")],
                 metrics=("contains", "exact_match"))
    assert first.score_responses([" The capital of Egypt is Cairo."], 0) == ([True], {"contains": 1.0, "exact_match": 0.0})


def test_majority_vote_scores_the_vote_on_both_paths():
    doc = {"question": "What is 44 + 1?", "target": "45"}
    task = Task(name="t", docs=[doc], extract=["first_number", "majority_vote"], metrics=("exact_match", "pass@k"))
    correct, metrics = task.score_responses(["45", "44", "45 apples"], 0)
    assert metrics == {"exact_match": 1.0} and correct == [True, False, True]
    correct, metrics = task.score_responses(["44", "45", "44"], 0)
    assert metrics == {"exact_match": 0.0} and correct == [False, True, False]


def test_generation_with_contains_original_format_equals_plain_run(hf_default, default_model_dir, tmp_path):
    task = write_task(tmp_path, "capitals_em", f"data: {CAPITALS}\nfields:\n  - {{descriptor: Country, field: country}}\n"
                      "output: Capital\ntarget: capital\nmetrics: [exact_match, contains]\nmax_tokens: 8\n")
    # through its chat template the model answers in sentences ("The capital of Greece is Athens, a")
    plain, formats = both_runs(default_model_dir, hf_default, task, tmp_path, apply_chat_template=True)
    assert_rows_equal(plain, formats)
    # substring credit is not exact-match credit (the old --formats path gave exact_match = contains)
    r = plain["results"]["capitals_em"]
    assert r["contains"] > r["exact_match"], r


def test_majority_vote_with_samples_original_format_equals_plain_run(hf_default, default_model_dir, tmp_path):
    task = write_task(tmp_path, "arith_vote", f"data: {ARITH}\nfields:\n  - {{descriptor: Question, field: question}}\n"
                      "target: answer\nfilters: [first_number, majority_vote]\nmetrics: [exact_match, pass@k]\n"
                      "max_tokens: 12\n")
    plain, formats = both_runs(default_model_dir, hf_default, task, tmp_path, num_samples=3, temperature=1.0,
                               ks=[1, 3], limit=6)
    assert_rows_equal(plain, formats)
    rows = plain["samples"]
    assert all(len(r["responses"]) == 3 and len(r["filtered"]) == 1 for r in rows)
    # exact_match scores the vote; pass@k counts the samples the outcome metric credits
    for r in rows:
        assert r["metrics"]["exact_match"] == float(r["filtered"][0] == r["gold"])
        assert r["metrics"]["pass@3"] == float(any(r["correct"]))


def test_multiple_choice_original_format_equals_plain_run(hf_default, default_model_dir, tmp_path):
    task = write_task(tmp_path, "capitals_choice", f"data: {CAPITALS}\nfields:\n  - {{descriptor: Country, field: country}}\n"
                      "output: Capital\ntarget: capital\nchoices: options\nmetrics: [acc, acc_norm]\n")
    plain, formats = both_runs(default_model_dir, hf_default, task, tmp_path)
    assert_rows_equal(plain, formats)
    assert all(r["correct"] == [r["metrics"]["acc"] == 1.0] for r in plain["samples"])


def test_lmeval_multiple_choice_original_format_equals_plain_run(monkeypatch, hf_default, default_model_dir, tmp_path):
    """An ``lmeval:`` task (local data): format 0's prompts and per-document metrics are lm-eval's own
    run's (its rows hold lm-eval's (loglikelihood, is_greedy) pairs as responses, so those differ)."""
    pytest.importorskip("lm_eval")
    from llmgen.tasks.lmeval import INCLUDE_ENV

    monkeypatch.chdir(ROOT)  # the example YAMLs name their data relative to the repository root
    monkeypatch.setenv(INCLUDE_ENV, os.pathsep.join([str(ROOT / "docs" / "examples" / "tasks" / "lmeval")]))
    name = "lmeval:llmgen_capitals_fields"
    plain, formats = both_runs(default_model_dir, hf_default, name, tmp_path)
    assert formats["results"][name] == plain["results"][name]
    ours = {r["doc_id"]: (r["prompt"], r["metrics"]) for r in formats["samples"]}
    assert ours == {r["doc_id"]: (r["prompt"], r["metrics"]) for r in plain["samples"]}
    rows = [json.loads(x) for x in (tmp_path / "run" / "format_samples.jsonl").read_text().splitlines()]
    assert {r["format_id"] for r in rows} == {0, 1}

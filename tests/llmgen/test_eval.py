"""``llmgen eval``: run folders, resume from the cache, file tasks, and every bad input."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from llmgen.backends.hf import HFBackend
from llmgen.errors import LlmgenError
from llmgen.evaluate import RUNNERS, EvalConfig, run_eval
from llmgen.prompts.render import prompt_structure
from llmgen.tasks import OUTPUT_TYPES, get_task, list_tasks

LLMGEN = [sys.executable, "-m", "llmgen.cli.main"]


def test_builtin_task_listing_and_prompt():
    assert "arithmetic" in list_tasks()
    task = get_task("arithmetic")
    prompt = task.build_prompt(task.docs[0])
    assert prompt.count("Answer:") == 4 and prompt.endswith("Answer:")
    assert task.is_correct(" 7 apples.", {**task.docs[0], "target": "7"})
    assert not task.is_correct(" 8", {**task.docs[0], "target": "7"})


def test_eval_writes_run_folder(tmp_path, hf_default):
    cfg = EvalConfig(model=hf_default.model_path, tasks=["arithmetic"], limit=6, output_dir=str(tmp_path / "run"),
                     cache=str(tmp_path / "cache.sqlite"))
    out = run_eval(cfg, backend=hf_default, show_progress=False)
    run = tmp_path / "run"
    results = json.loads((run / "results.json").read_text())
    rows = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and {r["doc_id"] for r in rows} == set(range(6))
    em = sum(r["metrics"]["exact_match"] for r in rows) / 6
    assert results["results"]["arithmetic"]["exact_match"] == pytest.approx(em)
    assert results["versions"]["transformers"] and results["backend"]["backend"] == "hf"
    u = results["uncertainty"]["arithmetic"]["exact_match"]
    assert u["ci_low"] <= em <= u["ci_high"]
    assert out["cache"]["misses"] == 6


class InterruptingBackend(HFBackend):
    """The real HF backend, interrupted (as by Ctrl-C) after a number of generate calls."""

    def __init__(self, inner: HFBackend, calls_before_interrupt: int) -> None:
        self.__dict__.update(inner.__dict__)
        self.left = calls_before_interrupt
        self.generated_prompts: list[str] = []

    def generate(self, prompts, sampling):
        if self.left == 0:
            raise KeyboardInterrupt
        self.left -= 1
        self.generated_prompts += list(prompts)
        return super().generate(prompts, sampling)


def test_resume_after_interrupt(tmp_path, hf_default):
    """A killed run leaves no results, keeps its finished batches; the rerun computes only the rest."""
    cache = str(tmp_path / "cache.sqlite")
    cfg = EvalConfig(model=hf_default.model_path, tasks=["arithmetic"], limit=10, batch_size=4,
                     output_dir=str(tmp_path / "run"), cache=cache, num_samples=2, temperature=0.7)
    first = InterruptingBackend(hf_default, calls_before_interrupt=1)
    first.batch_size = 4  # the cache commits once per backend batch
    with pytest.raises(KeyboardInterrupt):
        run_eval(cfg, backend=first, show_progress=False)
    assert not (tmp_path / "run" / "results.json").exists()
    assert len(first.generated_prompts) == 4
    second = InterruptingBackend(hf_default, calls_before_interrupt=100)
    second.batch_size = 4
    out = run_eval(cfg, backend=second, show_progress=False)
    assert out["cache"]["hits"] == 4 and out["cache"]["misses"] == 6
    assert len(second.generated_prompts) == 6
    assert not set(second.generated_prompts) & set(first.generated_prompts), "no prompt is recomputed"
    rows = (tmp_path / "run" / "samples.jsonl").read_text().splitlines()
    assert len(rows) == 10 and len({json.loads(r)["doc_id"] for r in rows}) == 10
    third = run_eval(cfg, backend=InterruptingBackend(hf_default, 0), show_progress=False)
    assert third["cache"]["hits"] == 10
    assert third["results"] == out["results"]


def test_yaml_and_jsonl_tasks(tmp_path, hf_default):
    data = tmp_path / "capitals.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in [
        {"country": "France", "capital": "Paris", "options": ["Paris", "Berlin", "Madrid"]},
        {"country": "Germany", "capital": "Berlin", "options": ["Rome", "Berlin", "Paris"]},
        {"country": "Italy", "capital": "Rome", "options": ["Rome", "Lisbon", "Oslo"]},
    ]) + "\n")
    (tmp_path / "mc.yaml").write_text(
        "name: capitals_mc\ndata: capitals.jsonl\ntemplate: 'The capital of {country} is'\n"
        "target: capital\nchoices: options\n")
    (tmp_path / "gen.yaml").write_text(
        "name: capitals_gen\ndata: capitals.jsonl\nfields:\n  - {descriptor: Country, field: country}\n"
        "output: Capital\ntarget: capital\nmetric: contains\nmax_tokens: 6\n")
    cfg = EvalConfig(model=hf_default.model_path, tasks=[str(tmp_path / "mc.yaml"), str(tmp_path / "gen.yaml")],
                     cache=None)
    out = run_eval(cfg, backend=hf_default, show_progress=False)
    assert out["results"]["capitals_mc"]["acc"] >= 2 / 3
    assert 0 <= out["results"]["capitals_gen"]["contains"] <= 1
    prompts = [r["prompt"] for r in out["samples"] if r["task"] == "capitals_gen"]
    assert prompts[0] == "Country: France\nCapital:"

    # the shipped examples: integer gold labels, a last-number regex filter, a system prompt + seeded 2-shot
    examples = Path(__file__).resolve().parents[2] / "docs" / "examples" / "tasks"
    (tmp_path / "first.yaml").write_text(  # the same task scored by the first number of the response
        f"name: arith_first_number\ndata: {examples / 'lmeval' / 'data' / 'arith.jsonl'}\n"
        "template: \"Question: {question}\\nAnswer:\"\ntarget: answer\nextract: first_number\n"
        "stop: [\"\\n\", \"Question:\"]\nmax_tokens: 16\n")
    names = [str(examples / f) for f in ("capitals_mc.yaml", "arith_last_number.yaml", "my_task.yaml")]
    out = run_eval(EvalConfig(model=hf_default.model_path, tasks=names + [str(tmp_path / "first.yaml")], cache=None),
                   backend=hf_default, show_progress=False)
    assert out["results"]["capitals_mc"]["acc"] >= 5 / 6
    last = {r["doc_id"]: r for r in out["samples"] if r["task"] == "arith_last_number"}
    first = {r["doc_id"]: r for r in out["samples"] if r["task"] == "arith_first_number"}
    assert [r["responses"] for r in last.values()] == [r["responses"] for r in first.values()]  # same greedy text
    for i, r in last.items():  # each row: its filtered answer is the last / first number of the same text
        numbers = re.findall(r"-?[0-9]+", r["responses"][0])
        assert r["filtered"] == [numbers[-1] if numbers else "[invalid]"]
        assert first[i]["filtered"] == [numbers[0] if numbers else ""]
    # "a + b = c" answers: the last number is right where the first is not
    assert out["results"]["arith_last_number"]["exact_match"] > out["results"]["arith_first_number"]["exact_match"]
    gen = next(r for r in out["samples"] if r["task"] == "capitals_gen")
    assert gen["prompt"].startswith("Answer with the name of a city.\n\nCountry: ") and gen["prompt"].count("Capital:") == 3


def run_cli(*args, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(LLMGEN + list(args), capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("args,message", [
    (["eval", "--model", "no-such-model"], "unknown model"),
    (["eval", "--model", "/nonexistent/folder"], "model not found"),
    (["eval", "--tasks", "no_such_task"], "unknown task 'no_such_task'"),
    (["eval", "--tasks", "/nonexistent/t.jsonl"], "file not found"),
    (["eval", "--num-samples", "2", "--temperature", "0.8", "--k", "4"], "pass@4 needs at least 4 samples"),
    (["eval", "--num-samples", "4"], "greedy"),
    (["eval", "--backend", "tpu"], "unknown backend"),
])
def test_cli_bad_input(args, message, tmp_path):
    r = run_cli(*args, "--output-dir", str(tmp_path / "run"))
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error:") and message in lines[-1], r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("content,message", [
    ('{"prompt": "a", "target": "b"}\n{"prompt": oops}\n', "malformed JSONL"),
    ('{"prompt": "a"}\n', "missing field 'target'"),
    ("", "empty dataset"),
])
def test_cli_bad_task_files(content, message, tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text(content)
    r = run_cli("eval", "--tasks", str(f))
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


def test_yaml_task_errors(tmp_path):
    (tmp_path / "t.yaml").write_text("name: x\ndata: d.jsonl\ntarget: a\n")
    with pytest.raises(LlmgenError, match="file not found"):
        get_task(str(tmp_path / "t.yaml"))
    (tmp_path / "d.jsonl").write_text('{"question": "q"}\n')
    with pytest.raises(LlmgenError, match="has no field 'a'"):
        get_task(str(tmp_path / "t.yaml"))
    (tmp_path / "u.yaml").write_text("data: d.jsonl\ntarget: question\ntemplat: '{q}'\n")
    with pytest.raises(LlmgenError, match="unknown key 'templat'"):
        get_task(str(tmp_path / "u.yaml"))


def test_cli_eval_tasks_models(tmp_path, default_model_dir):
    r = run_cli("eval", "--tasks", "arithmetic", "--limit", "3", "--output-dir", str(tmp_path / "run"), "--no-cache")
    assert r.returncode == 0, r.stderr
    assert "exact_match" in r.stdout
    assert json.loads(Path(tmp_path / "run" / "results.json").read_text())["n_samples"]["arithmetic"] == 3
    r = run_cli("tasks")
    assert r.returncode == 0 and "arithmetic" in r.stdout
    r = run_cli("models")
    assert r.returncode == 0 and default_model_dir in r.stdout.replace("\n", "")


def test_recipe_tasks_are_eval_tasks(tiny_model_dir):
    """Classification tasks (FormatSpread) and generated math (pass@N) run through `llmgen eval`."""
    assert {"sentiment", "parity", "comparison", "math_generated_d2"} <= set(list_tasks())
    sentiment = get_task("sentiment")
    doc = sentiment.docs[0]
    assert sentiment.build_prompt(doc).endswith("Sentiment:") and doc["label"] in sentiment.choices_of(doc)
    # one Task type: the eval task is the recipe's task, split as the recipe splits it (no conversion)
    from llmgen.tasks.classification import demo_pool_split, load_classification_task

    recipe = load_classification_task("sentiment", n=len(sentiment.docs) + len(sentiment.fewshot_docs), seed=0)
    assert type(recipe) is type(sentiment) and prompt_structure(recipe).layout == prompt_structure(sentiment).layout
    assert (sentiment.fewshot_docs, sentiment.docs) == demo_pool_split(recipe.docs, seed=0)
    math = get_task("math_generated_d2")
    assert math.is_correct(f"The answer is {math.target_of(math.docs[0])}.", math.docs[0])
    out = run_eval(EvalConfig(model=tiny_model_dir, tasks=["sentiment", "math_generated_d2"], limit=4, cache=None),
                   show_progress=False)
    assert set(out["results"]) == {"sentiment", "math_generated_d2"}
    assert 0 <= out["results"]["sentiment"]["acc"] <= 1


def test_tofu_eval_task(tiny_model_dir, tmp_path, monkeypatch):
    """`llmgen eval --tasks tofu_forget10` runs TOFU's metrics: on the real TOFU rows with TOFU's
    ds_size, and offline on the synthetic set the unlearning recipe reads too."""
    import math

    from scipy.stats import hmean
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmgen.tasks.tofu import QA_PROMPT_TEMPLATE, load_eval_sets
    from tests.evals.test_tofu_metrics import _reference_logprob

    fixture = Path(__file__).parents[1] / "fixtures" / "tofu"
    monkeypatch.setenv("LLMGEN_CACHE", str(tmp_path))
    monkeypatch.setenv("LLMGEN_TOFU_DATA", str(fixture))
    monkeypatch.setenv("LLMGEN_TOFU_DS_SIZE", "300")
    out = run_eval(EvalConfig(model=tiny_model_dir, tasks=["tofu_forget10"], limit=3, max_new_tokens=4, cache=None),
                   show_progress=False)
    res = out["results"]["tofu_forget10"]
    nine = [res[f"{s}.{m}"] for s in ("retain", "real_authors", "world_facts") for m in ("prob", "rougeL", "truth_ratio")]
    assert res["model_utility"] == pytest.approx(hmean(nine) if min(nine) > 0 else 0.0)
    # counts are not metrics: they sit with the task's description
    assert not any(k.endswith(".n") or k == "ds_size" for k in res)
    described = out["tasks"]["tofu_forget10"]
    assert described["ds_size"] == 300 and described["counts"] == {s: 3 for s in ("forget", "retain", "real_authors", "world_facts")}
    assert out["n_samples"]["tofu_forget10"] == 12
    by_split: dict[str, list[dict]] = {}
    for r in out["samples"]:
        by_split.setdefault(r["split"], []).append(r)
    assert {k: len(v) for k, v in by_split.items()} == {"forget": 3, "retain": 3, "real_authors": 3, "world_facts": 3}
    for split, rows in by_split.items():
        for m in ("prob", "rougeL"):  # plain means of the per-example values
            assert res[f"{split}.{m}"] == pytest.approx(sum(r["metrics"][m] for r in rows) / 3)
    fwd = [min(r["metrics"]["truth_ratio"], 1 / r["metrics"]["truth_ratio"]) for r in by_split["forget"]]
    assert res["forget.truth_ratio"] == pytest.approx(sum(fwd) / 3)  # forget: mean min(R, 1/R)
    ret = [max(0.0, 1 - r["metrics"]["truth_ratio"]) for r in by_split["retain"]]
    assert res["retain.truth_ratio"] == pytest.approx(sum(ret) / 3)  # others: mean max(0, 1 − R)
    # the forget probability of the first real row, computed directly with transformers (EOS included)
    row = load_eval_sets(fixture, "forget10")["forget"][0]
    model, tok = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)
    lp, n = _reference_logprob(model, tok, QA_PROMPT_TEMPLATE.format(question=row["question"]), row["answer"])
    assert by_split["forget"][0]["metrics"]["prob"] == pytest.approx(math.exp(lp / n), rel=1e-4)

    # offline: the synthetic set in the cache, the same folder `llmgen npo-unlearning --data synthetic` reads
    monkeypatch.delenv("LLMGEN_TOFU_DATA")
    monkeypatch.delenv("LLMGEN_TOFU_DS_SIZE")
    from llmgen.recipes.npo_unlearning import UnlearnConfig, data_source

    out = run_eval(EvalConfig(model=tiny_model_dir, tasks=["tofu_forget10"], limit=2, max_new_tokens=4, cache=None),
                   show_progress=False)
    res = out["results"]["tofu_forget10"]
    assert out["tasks"]["tofu_forget10"]["ds_size"] == 300 and out["tasks"]["tofu_forget10"]["counts"]["forget"] == 2
    assert list(tmp_path.glob("tofu-synthetic/*")) == [Path(data_source(UnlearnConfig()))]


def test_every_output_type_has_one_runner():
    # evaluate_task dispatches on the task's output type through one table, no other branching
    assert set(RUNNERS) == set(OUTPUT_TYPES)


def test_run_eval_from_a_script_runs_every_check(tmp_path, tiny_model_dir):
    # run_eval is the library's entry: the checks llmgen eval makes before any model loads are its own
    run = tmp_path / "run"
    cases = [(dict(seed=-1), "--seed must be an integer in [0, 2**32)"),
             (dict(temperature=float("nan")), "--temperature"),
             (dict(model_args={"dtype": "float7"}), "unknown dtype 'float7'"),
             (dict(model_args={"adapter": str(tmp_path / "missing")}), "adapter folder not found"),
             (dict(backend="vllm", model_args={"dtype": "bf16"}), "unknown dtype 'bf16'")]
    for kw, message in cases:
        with pytest.raises(LlmgenError, match=re.escape(message)):
            run_eval(EvalConfig(model=tiny_model_dir, tasks=["arithmetic"], output_dir=str(run), cache=None, **kw),
                     show_progress=False)
        assert not run.exists(), kw

"""``llmgen compare`` and ``llmgen report`` on run folders built from real (model-free) computations.

The runs are "evaluations" of noisy adders on addition problems: each solver answers a + b and
slips by one with a known, seeded probability, so per-example outcomes, paired counts and means
are real computations whose expected values we know.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest

from llmgen.analysis import compare_runs, load_run
from llmgen.cli.main import main
from llmgen.errors import LlmgenError
from llmgen.evals.passk import pass_at_k
from llmgen.evals.stats import mcnemar, summarize_metrics
from llmgen.io import atomic_write_json, atomic_write_jsonl
from llmgen.report import build_report, write_report


def addition_docs(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"doc_id": i, "a": int(a), "b": int(b)} for i, (a, b) in enumerate(rng.integers(0, 100, size=(n, 2)))]


def noisy_adder(a: int, b: int, p_err: float, rng: np.random.Generator) -> str:
    return str(a + b + (1 if rng.random() < p_err else 0))


def _png(path: Path, values: list[float], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot(range(1, len(values) + 1), values, marker="o")
    ax.set_title(title)
    fig.savefig(path, dpi=60)
    plt.close(fig)


def make_eval_run(root: Path, name: str, p_err: float, seed: int, task: str = "addition", n: int = 60,
                  n_responses: int = 4, docs: list[dict] | None = None, fmt_errors: list[float] | None = None,
                  per_task_file: bool = False) -> Path:
    """A run folder in the ``llmgen eval`` format, scored for real: exact match and pass@1.

    Like ``run_eval`` it writes one ``samples.jsonl`` whose rows carry ``task``, and the
    ``uncertainty`` block; ``per_task_file`` writes ``samples_<task>.jsonl`` instead (older layout).
    """
    run = root / name
    run.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    docs = docs if docs is not None else addition_docs(n)
    rows = []
    for d in docs:
        target = str(d["a"] + d["b"])
        responses = [noisy_adder(d["a"], d["b"], p_err, rng) for _ in range(n_responses)]
        c = sum(r == target for r in responses)
        rows.append({"task": task, "doc_id": d["doc_id"], "prompt": f"Question: What is {d['a']} + {d['b']}?\nAnswer:",
                     "target": target, "responses": responses,
                     "metrics": {"exact_match": int(responses[0] == target),
                                 "pass@1": pass_at_k(n_responses, c, 1)}})
    metrics = {"exact_match": float(np.mean([r["metrics"]["exact_match"] for r in rows])),
               "pass@1": float(np.mean([r["metrics"]["pass@1"] for r in rows]))}
    config = {"model": f"noisy-adder-{p_err}", "tasks": [task], "seed": seed, "num_samples": n_responses}
    results = {"config": config, "model": config["model"], "backend": "python", "versions": {"llmgen": "test"},
               "seed": seed, "timings": {"total_s": 0.01}, "results": {task: metrics}, "n_samples": {task: len(rows)},
               "uncertainty": {task: summarize_metrics([r["metrics"] for r in rows], seed=seed, n_resamples=200)}}
    if fmt_errors is not None:  # per-format results, as `llmgen eval --formats K` writes them
        formats = []
        for i, p in enumerate(fmt_errors):
            frng = np.random.default_rng(100 + i)
            acc = float(np.mean([noisy_adder(d["a"], d["b"], p, frng) == str(d["a"] + d["b"]) for d in docs]))
            formats.append({"format_id": i, "original": i == 0, "format": f"Q{'::' * (i % 3)} {{}}\nA: {{}}",
                            "metrics": {"exact_match": acc}})
        results["format_spread"] = {task: {"mode": "exhaustive", "formats": formats}}
    atomic_write_json(run / "config.json", config)
    atomic_write_json(run / "results.json", results)
    atomic_write_jsonl(run / (f"samples_{task}.jsonl" if per_task_file else "samples.jsonl"), rows)
    _png(run / "accuracy.png", [r["metrics"]["pass@1"] for r in rows[:20]], f"{name} pass@1")
    return run


def make_recipe_run(root: Path) -> Path:
    """A recipe-style run folder (no per-task results): curve values, a samples.jsonl, two PNGs."""
    run = root / "passk-curve"
    (run / "plots").mkdir(parents=True)
    ks = [1, 2, 4, 8]
    curve = [pass_at_k(8, 3, k) for k in ks]
    atomic_write_json(run / "config.json", {"recipe": "passn", "n": 8})
    atomic_write_json(run / "results.json", {"config": {"recipe": "passn"}, "pass_at_k": dict(zip(map(str, ks), curve, strict=True)),
                                             "best": {"k": 8, "value": curve[-1]}, "curve": curve})
    atomic_write_jsonl(run / "samples.jsonl", [{"problem": f"p{i}", "completion": "<b>x</b> & y", "correct": i % 2 == 0,
                                                "scores": {"k1": curve[0]}} for i in range(5)])
    _png(run / "passk.png", curve, "pass@k")
    _png(run / "plots" / "loss.png", [3.0, 2.0, 1.5], "loss")
    return run


def make_formatspread_recipe_run(root: Path) -> Path:
    """The FormatSpread recipe's layout: ``results["formats"]`` from a real bandit over a synthetic matrix."""
    from llmgen.evals.format_spread import bandit_spread

    run = root / "format-spread"
    run.mkdir(parents=True)
    rng = np.random.default_rng(0)
    outcomes = rng.random((8, 40)) < np.linspace(0.3, 0.9, 8)[:, None]
    res = bandit_spread(lambda arm, a, b: list(outcomes[arm, a:b]), 8, 40, budget=40, batch=10, seed=0)
    formats = [{"index": i, "template": f"Input{sep} {{}}\nOutput{sep} {{}}", "correct": res.successes[i],
                "evaluated": res.counts[i], "accuracy": res.accuracy(i) if res.counts[i] else None}
               for i, sep in enumerate([":", "::", " -", ":::", " |", " =", ">", " ~"])]
    atomic_write_json(run / "results.json", {
        "formats": formats, "original": {"index": 0, "accuracy": res.accuracy(0)},
        "best": {"index": res.best, "accuracy": res.accuracy(res.best)}, "spread": res.spread,
        "mode": "thompson", "task": {"name": "synthetic-classification"}, "budget_spent": res.budget_spent})
    _png(run / "accuracy_histogram.png", [f["accuracy"] or 0 for f in formats], "formats")
    return run


# ------------------------------------------------------------------ compare
def test_compare_paired_tests_and_flips(tmp_path):
    a = make_eval_run(tmp_path, "base", p_err=0.4, seed=1)
    b = make_eval_run(tmp_path, "better", p_err=0.1, seed=2, per_task_file=True)
    cmp = compare_runs([a, b], n_resamples=2000, seed=0)
    assert cmp.task == "addition" and cmp.n_examples == 60 and cmp.runs == ["base", "better"]
    assert cmp.metrics == ["exact_match", "pass@1"]
    rows_a = {r["doc_id"]: r for r in map(json.loads, (a / "samples.jsonl").read_text().splitlines())}
    rows_b = {r["doc_id"]: r for r in map(json.loads, (b / "samples_addition.jsonl").read_text().splitlines())}
    em_a = [rows_a[i]["metrics"]["exact_match"] for i in sorted(rows_a)]
    em_b = [rows_b[i]["metrics"]["exact_match"] for i in sorted(rows_b)]
    em = next(t for t in cmp.tests if t.metric == "exact_match")
    assert em.bootstrap.diff == pytest.approx(np.mean(em_b) - np.mean(em_a))
    assert em.gained == [i for i in sorted(rows_a) if em_a[i] == 0 and em_b[i] == 1]
    assert em.lost == [i for i in sorted(rows_a) if em_a[i] == 1 and em_b[i] == 0]
    ref = mcnemar(em_b, em_a)
    assert (em.mcnemar.b, em.mcnemar.c, em.mcnemar.p_value) == (len(em.gained), len(em.lost), ref.p_value)
    assert em.bootstrap.diff > 0 and em.bootstrap.p_value < 0.05
    pk = next(t for t in cmp.tests if t.metric == "pass@1")
    assert pk.mcnemar is None  # pass@1 from 4 samples is not 0/1
    assert cmp.summaries["base"]["pass@1"]["mean"] == pytest.approx(
        summarize_metrics([r["metrics"] for r in rows_a.values()])["pass@1"]["mean"])
    json.dumps(cmp.as_dict())


def test_compare_refuses_incomparable_runs(tmp_path):
    base = make_eval_run(tmp_path, "base", 0.3, 1)
    other_task = make_eval_run(tmp_path, "other-task", 0.3, 2, task="subtraction")
    fewer = make_eval_run(tmp_path, "fewer", 0.3, 3, docs=addition_docs(50))
    shifted = make_eval_run(tmp_path, "shifted", 0.3, 4, docs=addition_docs(60, seed=9))
    with pytest.raises(LlmgenError, match="no task in common"):
        compare_runs([base, other_task])
    with pytest.raises(LlmgenError, match="different example sets"):
        compare_runs([base, fewer])
    with pytest.raises(LlmgenError, match="different target"):
        compare_runs([base, shifted])
    with pytest.raises(LlmgenError, match="missing from run"):
        compare_runs([base, other_task], task="addition")
    with pytest.raises(LlmgenError, match="at least two runs"):
        compare_runs([base])
    with pytest.raises(LlmgenError, match="not a run folder"):
        compare_runs([base, tmp_path])
    with pytest.raises(LlmgenError, match="metric 'bleu'"):
        compare_runs([base, make_eval_run(tmp_path, "b2", 0.2, 5)], metrics=["bleu"])


def test_compare_cli(tmp_path, capsys):
    a = make_eval_run(tmp_path, "base", 0.4, 1)
    b = make_eval_run(tmp_path, "better", 0.1, 2)
    out = tmp_path / "cmp.json"
    main(["compare", str(a), str(b), "--resamples", "500", "--json", str(out)])
    text = capsys.readouterr().out
    assert "exact_match" in text and "McNemar" in text and "gained doc" in text
    assert json.loads(out.read_text())["task"] == "addition"
    c = make_eval_run(tmp_path, "other", 0.1, 2, task="subtraction")
    with pytest.raises(SystemExit) as e:
        main(["compare", str(a), str(c)])
    assert e.value.code == 2
    assert "runs not comparable" in capsys.readouterr().err


# ------------------------------------------------------------------ report
def _data_uri_pngs(text: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)]


def test_report_is_self_contained_with_tables_images_and_samples(tmp_path):
    a = make_eval_run(tmp_path, "base", 0.4, 1, fmt_errors=[0.2, 0.5, 0.05, 0.3])
    b = make_eval_run(tmp_path, "better", 0.1, 2)
    res = json.loads((b / "results.json").read_text())
    del res["uncertainty"]  # an older run: the report bootstraps intervals from its samples instead
    atomic_write_json(b / "results.json", res)
    recipe = make_recipe_run(tmp_path)
    text = build_report([a, b, recipe], max_samples=50)
    # nothing is fetched: no external src/href, no CDN
    assert not re.search(r'(src|href)="(https?:)?//', text)
    assert "<link" not in text and "<script src" not in text
    pngs = _data_uri_pngs(text)
    assert len(pngs) == 4 and all(p.startswith(b"\x89PNG") for p in pngs)
    assert "plots/loss.png" in text
    # metric table with intervals bootstrapped from the samples
    assert "<h2>Overview</h2>" in text and "95% CI" in text and "results.json</td>" in text
    assert "bootstrapped from samples" in text
    # format spread view: original/min/median/max/spread and an SVG strip plot
    assert "Format spread" in text and "<svg class=\"strip\"" in text and "fmt-orig" in text
    # the FormatSpread recipe's per-format list gets the same view
    fs = build_report([make_formatspread_recipe_run(tmp_path)])
    assert "synthetic-classification" in fs and "fmt-orig" in fs and "partial" in fs
    assert "Input:: {}" in fs and "budget_spent" in fs
    # searchable sample tables, with text escaped
    assert text.count('class="filter"') == 3
    assert "Question: What is" in text and "&lt;b&gt;x&lt;/b&gt; &amp; y" in text
    assert "first 50 of 60" in text
    # the recipe's nested values are flattened into a key/value table
    assert "pass_at_k.8" in text and "best.value" in text


def test_report_cli_writes_file_and_checks_inputs(tmp_path, capsys):
    a = make_eval_run(tmp_path, "base", 0.4, 1)
    out = tmp_path / "out" / "report.html"
    main(["report", str(a), "-o", str(out)])
    assert out.is_file() and "wrote" in capsys.readouterr().out
    assert load_run(a).name == "base"
    with pytest.raises(SystemExit) as e:
        main(["report", str(tmp_path / "missing"), "-o", str(tmp_path / "r.html")])
    assert e.value.code == 2
    assert not (tmp_path / "r.html").exists()
    with pytest.raises(LlmgenError):
        write_report([], tmp_path / "r.html")


# ------------------------------------------------------------------ real evaluations (tiny model)
@pytest.fixture(scope="module")
def tiny_hf(tiny_model_dir):
    from llmgen.backends import get_backend

    backend = get_backend("hf", tiny_model_dir)
    yield backend
    backend.close()


def _config(model: str, out: Path | None, **kw):
    from llmgen.evaluate import EvalConfig

    return EvalConfig(model=model, tasks=["arithmetic"], limit=3, max_tokens=3, cache=None,
                      output_dir=str(out) if out else None, **kw)


def test_formats_k_distinct_prompts_and_original_equals_plain_eval(tiny_hf, tiny_model_dir, tmp_path):
    from llmgen.evaluate import run_eval
    from llmgen.format_eval import run_format_eval

    plain = run_eval(_config(tiny_model_dir, tmp_path / "plain"), backend=tiny_hf, show_progress=False)
    out = run_format_eval(_config(tiny_model_dir, tmp_path / "fmt"), 4, backend=tiny_hf, show_progress=False)
    spread = out["format_spread"]["arithmetic"]
    assert len(spread["formats"]) == 4 and spread["formats"][0]["original"]
    # K distinct rendered prompts for the same example, and distinct format templates
    first = [r["prompt"] for r in map(json.loads, (tmp_path / "fmt" / "format_samples.jsonl").read_text().splitlines())
             if r["doc_id"] == 0]
    assert len(first) == 4 and len(set(first)) == 4
    assert len({f["format"] for f in spread["formats"]}) == 4
    # format 0 is plain `llmgen eval`: same prompts, responses and scores
    assert out["results"] == plain["results"]
    assert [r["prompt"] for r in out["samples"]] == [r["prompt"] for r in plain["samples"]]
    assert [r["responses"] for r in out["samples"]] == [r["responses"] for r in plain["samples"]]
    s = spread["summary"]["exact_match"]
    assert s["original"] == plain["results"]["arithmetic"]["exact_match"]
    assert s["min"] <= s["median"] <= s["max"] and s["spread"] == pytest.approx(s["max"] - s["min"])
    # the formats run is an ordinary run folder: compare and report accept it
    cmp = compare_runs([tmp_path / "plain", tmp_path / "fmt"], n_resamples=200)
    assert all(t.bootstrap.diff == 0 for t in cmp.tests)
    html = build_report([tmp_path / "fmt"])
    assert "Format spread" in html and "format_samples.jsonl" in html


def test_format_budget_runs_the_bandit(tiny_hf, tiny_model_dir, tmp_path):
    from llmgen.format_eval import run_format_eval

    cfg = _config(tiny_model_dir, tmp_path / "bandit")
    cfg.limit = 4
    out = run_format_eval(cfg, 5, budget=8, backend=tiny_hf, show_progress=False)
    entry = out["format_spread"]["arithmetic"]
    assert entry["mode"] == "bandit" and entry["budget_spent"] <= 8
    assert entry["formats"][entry["best"]]["evaluated"] and entry["formats"][entry["worst"]]["evaluated"]
    with pytest.raises(LlmgenError, match="budget"):
        run_format_eval(cfg, 5, budget=6, backend=tiny_hf, show_progress=False)


def test_formats_refuse_template_tasks(tmp_path, tiny_model_dir):
    from llmgen.format_eval import run_format_eval

    data = tmp_path / "plain.jsonl"
    atomic_write_jsonl(data, [{"prompt": "2+2=", "target": "4"}])
    cfg = _config(tiny_model_dir, None)
    cfg.tasks = [str(data)]
    with pytest.raises(LlmgenError, match="plain template"):
        run_format_eval(cfg, 3, show_progress=False)


def test_compare_two_real_eval_runs(tiny_hf, tiny_model_dir, tmp_path):
    from llmgen.evaluate import run_eval

    run_eval(_config(tiny_model_dir, tmp_path / "greedy"), backend=tiny_hf, show_progress=False)
    run_eval(_config(tiny_model_dir, tmp_path / "sampled", temperature=1.0, num_samples=2, seed=3),
             backend=tiny_hf, show_progress=False)
    cmp = compare_runs([tmp_path / "greedy", tmp_path / "sampled"], n_resamples=200)
    assert cmp.n_examples == 3 and "exact_match" in cmp.metrics
    cfg = _config(tiny_model_dir, tmp_path / "two")
    cfg.limit = 2
    run_eval(cfg, backend=tiny_hf, show_progress=False)
    with pytest.raises(LlmgenError, match="different example sets"):
        compare_runs([tmp_path / "greedy", tmp_path / "two"])

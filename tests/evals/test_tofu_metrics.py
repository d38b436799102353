"""TOFU metrics against independent computations (hand math, scipy, rouge-score) and an
end-to-end evaluation of a tiny model: the TOFU task through the runner on the HF backend."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from llmgen.errors import LlmgenError
from llmgen.evals.tofu import (
    answer_probabilities,
    choice_probabilities,
    example_metrics,
    forget_quality,
    harmonic_mean,
    model_utility,
    rouge_l_recall,
    summarize,
    truth_ratio_score,
    truth_ratios,
)
from llmgen.tasks.tofu import QA_PROMPT_TEMPLATE, load_retain_logs, save_retain_logs

FIXTURE = Path(__file__).parents[1] / "fixtures" / "tofu"


def test_probabilities_by_hand():
    # P(a|q) = e^-6 over 3 tokens → e^-2
    assert answer_probabilities([-6.0, -1.0], [3, 1]) == pytest.approx([math.exp(-2), math.exp(-1)])
    # true: e^-1; perturbed: e^-2 (over 2 tokens: e^-1), e^-3
    p = choice_probabilities([-1.0], [1], [[-2.0, -3.0]], [[2, 1]])
    assert p[0] == pytest.approx(math.exp(-1) / (math.exp(-1) + math.exp(-1) + math.exp(-3)))
    with pytest.raises(LlmgenError, match="at least one answer token"):
        answer_probabilities([-1.0], [0])


def test_truth_ratio_by_hand():
    # paraphrase: e^(-4/2) = e^-2; perturbed normalised probs e^-1 and e^-3 → geometric mean e^-2 → R = 1
    assert truth_ratios([-4.0], [2], [[-3.0, -3.0]], [[3, 1]])[0] == pytest.approx(1.0)
    para, pert = math.exp(-0.5), [math.exp(-2.0 / 4), math.exp(-6.0 / 2), math.exp(-1.0)]
    r = truth_ratios([-1.0], [2], [[-2.0, -6.0, -1.0]], [[4, 2, 1]])[0]
    assert r == pytest.approx(np.prod(pert) ** (1 / 3) / para)
    ratios = [0.5, 2.0, 1.0, 4.0]
    assert truth_ratio_score(ratios, forget=True) == pytest.approx((0.5 + 0.5 + 1 + 0.25) / 4)
    assert truth_ratio_score(ratios, forget=False) == pytest.approx((0.5 + 0 + 0 + 0) / 4)


def test_rouge_l_recall_matches_rouge_score_and_hand_lcs():
    from rouge_score import rouge_scorer

    preds = ["the cat on mat", "Jane Austen wrote it", "", "running dogs barked"]
    refs = ["the cat sat on the mat", "Jane Austen", "Paris", "the dog runs and barks"]
    got = rouge_l_recall(preds, refs)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    assert got == [scorer.score(r, p)["rougeL"].recall for p, r in zip(preds, refs, strict=True)]
    assert got[0] == pytest.approx(4 / 6) and got[1] == 1.0 and got[2] == 0.0
    assert got[3] == pytest.approx(2 / 5)  # stemming: run~runs... "dog", "bark" match after stemming
    with pytest.raises(LlmgenError):
        rouge_l_recall(["a"], [])


def test_forget_quality_is_the_ks_pvalue_and_invariant_to_tofus_inverse():
    from scipy.stats import ks_2samp

    rng = np.random.default_rng(0)
    a, b = rng.lognormal(0, 1, 40), rng.lognormal(0.5, 1, 40)
    assert forget_quality(a, b) == pytest.approx(ks_2samp(a, b).pvalue)
    assert forget_quality(a, b) == pytest.approx(ks_2samp(1 / a, 1 / b).pvalue)  # TOFU feeds 1/R
    assert forget_quality(a, a) == pytest.approx(1.0)
    with pytest.raises(LlmgenError):
        forget_quality([], b)


def test_model_utility_is_the_harmonic_mean_of_nine():
    from scipy.stats import hmean

    vals = np.linspace(0.1, 0.9, 9)
    metrics = {s: {m: vals[3 * i + j] for j, m in enumerate(("prob", "rougeL", "truth_ratio"))}
               for i, s in enumerate(("retain", "real_authors", "world_facts"))}
    assert model_utility(metrics) == pytest.approx(hmean(vals))
    metrics["retain"]["rougeL"] = 0.0
    assert model_utility(metrics) == 0.0
    del metrics["world_facts"]
    with pytest.raises(LlmgenError, match="world_facts.prob"):
        model_utility(metrics)
    assert harmonic_mean([1.0, 1.0]) == 1.0


def test_example_metrics_and_summarize_by_hand():
    from scipy.stats import hmean, ks_2samp

    # forget: P = e^(-6/3); truth ratio against the base e^(-4/2) with perturbed e^-1, e^-3 → 1
    m = example_metrics("forget", (-6.0, 3), (-4.0, 2), [(-3.0, 3), (-3.0, 1)], "the cat on mat", "the cat sat on the mat")
    assert m == pytest.approx({"prob": math.exp(-2), "truth_ratio": 1.0, "rougeL": 4 / 6})
    # utility sets: P(true) relative to the perturbed answers; no generation, no rougeL
    m = example_metrics("world_facts", (-1.0, 1), (-1.0, 1), [(-2.0, 2), (-3.0, 1)], None, "Paris")
    assert m == pytest.approx({"prob": math.exp(-1) / (2 * math.exp(-1) + math.exp(-3)),
                               "truth_ratio": math.exp((-1 - 3) / 2 + 1)})
    per_set = {"forget": {"prob": [0.2, 0.4], "truth_ratio": [0.5, 2.0], "rougeL": [1.0, 0.0]},
               **{s: {"prob": [0.5], "truth_ratio": [0.25], "rougeL": [0.5]} for s in ("retain", "real_authors", "world_facts")}}
    flat = summarize(per_set, retain_ratios=[0.9, 1.1, 3.0])
    assert flat["forget.prob"] == pytest.approx(0.3) and flat["forget.rougeL"] == 0.5
    assert flat["forget.truth_ratio"] == pytest.approx(0.5) and flat["retain.truth_ratio"] == pytest.approx(0.75)
    assert flat["forget_quality"] == pytest.approx(ks_2samp([0.5, 2.0], [0.9, 1.1, 3.0]).pvalue)
    assert flat["model_utility"] == pytest.approx(hmean([0.5, 0.5, 0.75] * 3))
    assert not any(k.endswith(".n") for k in flat)  # counts are not metrics
    assert "forget_quality" not in summarize(per_set) and "model_utility" not in summarize({"forget": per_set["forget"]})


def test_retain_logs_roundtrip_and_missing(tmp_path):
    with pytest.raises(LlmgenError, match="retain-model logs not found"):
        load_retain_logs(tmp_path / "missing.json")
    with pytest.raises(LlmgenError, match="needs retain-model logs"):
        load_retain_logs(None)
    rows = [{"split": "forget", "metrics": {"truth_ratio": 0.5}}, {"split": "retain", "metrics": {"truth_ratio": 9.0}},
            {"split": "forget", "metrics": {"truth_ratio": 1.5}}]
    path = save_retain_logs(tmp_path / "r.json", rows)
    assert load_retain_logs(path) == [0.5, 1.5]
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(LlmgenError, match="forget_truth_ratios"):
        load_retain_logs(tmp_path / "bad.json")


def _reference_logprob(model, tok, prompt: str, answer: str) -> tuple[float, int]:
    """Summed log-probability of answer + EOS after the prompt, as TOFU's labels score it,
    computed here directly with transformers (independent of the backend)."""
    import torch

    ctx = tok(prompt.rstrip(" "), add_special_tokens=False)["input_ids"]
    full = tok(prompt.rstrip(" ") + " " + answer, add_special_tokens=False)["input_ids"]
    assert full[: len(ctx)] == ctx
    target = full[len(ctx):] + [tok.eos_token_id]
    ids = torch.tensor([ctx + target])
    with torch.no_grad():
        logp = model(ids).logits[0].float().log_softmax(-1)
    return float(sum(logp[len(ctx) - 1 + i, t] for i, t in enumerate(target))), len(target)


class _Recording:
    """The real backend, recording the sampling settings it is asked for."""

    def __init__(self, backend):
        self.backend, self.samplings = backend, []

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def generate(self, prompts, sampling):
        self.samplings.append(sampling)
        return self.backend.generate(prompts, sampling)


def test_tofu_task_on_a_tiny_model_with_real_rows(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmgen.backends import get_backend
    from llmgen.cache import RequestCache
    from llmgen.evaluate import EvalConfig, evaluate_task
    from llmgen.tasks.tofu import load_eval_sets, tofu_task

    backend = _Recording(get_backend("hf", tiny_model_dir))
    sets = load_eval_sets(FIXTURE, "forget10", 3)  # the real TOFU rows
    task = tofu_task(FIXTURE, "forget10", ds_size=3, retain_ratios=[0.9, 1.1, 1.0], max_new_tokens=4)
    flat, rows = evaluate_task(backend, task, EvalConfig(model=tiny_model_dir, cache=None), RequestCache(None))
    res: dict = {}
    for r in rows:
        for m, v in r["metrics"].items():
            res.setdefault(r["split"], {}).setdefault(m, []).append(v)
    for role in sets:
        assert len(res[role]["rougeL"]) == len(sets[role]) == 3
    # ROUGE-L generations: greedy, stopping at EOS only (no newline stop), the requested budget
    assert {(s.temperature, s.n, tuple(s.stop), s.max_tokens) for ss in backend.samplings for s in ss} == {(0.0, 1, (), 4)}
    model, tok = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)
    prompt = QA_PROMPT_TEMPLATE.format
    # probability = exp(logprob / tokens) over the answer tokens *and EOS*
    for role in ("forget", "retain"):
        for i, row in enumerate(sets[role]):
            lp, n = _reference_logprob(model, tok, prompt(question=row["question"]), row["answer"])
            assert res[role]["prob"][i] == pytest.approx(math.exp(lp / n), rel=1e-4)
    # utility sets: truth ratio against the answer itself (they have no paraphrase), 3 perturbed
    row = sets["world_facts"][0]
    base_lp, base_n = _reference_logprob(model, tok, prompt(question=row["question"]), row["answer"])
    pert = [_reference_logprob(model, tok, prompt(question=row["question"]), p) for p in row["perturbed_answer"]]
    ratio = math.exp(np.mean([lp / n for lp, n in pert]) - base_lp / base_n)
    assert res["world_facts"]["truth_ratio"][0] == pytest.approx(ratio, rel=1e-4)
    p_true = math.exp(base_lp / base_n)
    assert res["world_facts"]["prob"][0] == pytest.approx(
        p_true / (p_true + sum(math.exp(lp / n) for lp, n in pert)), rel=1e-4)
    # forget/retain: truth ratio against the paraphrase
    row = sets["forget"][1]
    para_lp, para_n = _reference_logprob(model, tok, prompt(question=row["question"]), row["paraphrased_answer"])
    pert = [_reference_logprob(model, tok, prompt(question=row["question"]), p) for p in row["perturbed_answer"]]
    ratio = math.exp(np.mean([lp / n for lp, n in pert]) - para_lp / para_n)
    assert res["forget"]["truth_ratio"][1] == pytest.approx(ratio, rel=1e-4)
    from scipy.stats import hmean, ks_2samp

    nine = [flat[f"{s}.{m}"] for s in ("retain", "real_authors", "world_facts") for m in ("prob", "rougeL", "truth_ratio")]
    assert flat["model_utility"] == pytest.approx(hmean(nine) if min(nine) > 0 else 0.0)
    assert flat["forget_quality"] == pytest.approx(ks_2samp(res["forget"]["truth_ratio"], [0.9, 1.1, 1.0]).pvalue)
    assert set(flat) >= {"forget_quality", "model_utility", "retain.prob", "world_facts.truth_ratio"}
    assert not any(k.endswith(".n") for k in flat) and task.describe()["counts"]["forget"] == 3
    backend.close()


def test_default_generation_budget_is_tofus():
    from llmgen.tasks.tofu import MAX_NEW_TOKENS, generation_sampling

    s = generation_sampling()
    assert MAX_NEW_TOKENS == 200 and s.max_tokens == 200 and s.temperature == 0.0 and tuple(s.stop) == ()
    with pytest.raises(LlmgenError, match="max_new_tokens must be >= 1"):
        generation_sampling(0)


def test_evals_modules_are_pure_functions():
    """``evals/`` holds metric functions only: no file I/O, no backend, no data loading (issue 13)."""
    import ast

    import llmgen.evals as evals_pkg

    banned_modules = ("os", "pathlib", "shutil", "llmgen.io", "llmgen.backends", "llmgen.tasks.tofu", "llmgen.tasks",
                      "llmgen.models", "llmgen.cache", "datasets", "torch")
    folder = Path(evals_pkg.__file__).parent
    files = sorted(folder.glob("*.py"))
    assert {"tofu.py", "passk.py"} <= {f.name for f in files}
    for path in files:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for n in names:
                assert not any(n == b or n.startswith(b + ".") for b in banned_modules), (path.name, n)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id != "open", path.name


def test_summarize_keeps_every_per_row_metric():
    """A metric a task adds to its rows reaches the aggregates (its mean), next to TOFU's own."""
    per_set = {s: {"prob": [0.5, 0.3], "truth_ratio": [0.25, 0.5], "rougeL": [1.0, 0.5], "answer_words": [3.0, 6.0]}
               for s in ("forget", "retain", "real_authors", "world_facts")}
    flat = summarize(per_set)
    assert flat["forget.answer_words"] == 4.5 and flat["world_facts.answer_words"] == 4.5
    assert flat["retain.truth_ratio"] == pytest.approx((0.75 + 0.5) / 2) and flat["forget.prob"] == pytest.approx(0.4)
    assert flat["model_utility"] == pytest.approx(summarize({s: {k: v for k, v in m.items() if k != "answer_words"}
                                                              for s, m in per_set.items()})["model_utility"])


def test_tofu_task_aggregation_keeps_an_added_metric():
    """A TofuTask subclass reporting one more per-row metric: ``aggregate_rows`` keeps it per set."""
    from dataclasses import dataclass

    from llmgen.tasks.tofu import TofuTask, tofu_task

    @dataclass
    class WithLength(TofuTask):
        def score_outputs(self, doc, outputs):
            return {**super().score_outputs(doc, outputs), "answer_words": float(len(doc["answer"].split()))}

    base = tofu_task(FIXTURE, "forget10", ds_size=2)
    task = WithLength(**{f: getattr(base, f) for f in base.__dataclass_fields__})
    rows = [{"split": d["split"], "metrics": {"prob": 0.5, "truth_ratio": 0.5, "rougeL": 0.5,
                                              "answer_words": float(len(d["answer"].split()))}} for d in task.docs]
    agg = task.aggregate_rows(rows)
    for split in ("forget", "retain", "real_authors", "world_facts"):
        words = [len(d["answer"].split()) for d in task.docs if d["split"] == split]
        assert agg[f"{split}.answer_words"] == pytest.approx(sum(words) / len(words))

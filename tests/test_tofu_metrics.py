"""TOFU metrics against independent computations (hand math, scipy, rouge-score) and an
end-to-end evaluation of a tiny model through the HF backend."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from llmgen.errors import LlmgenError
from llmgen.evals.tofu import (
    PromptFormat,
    answer_probabilities,
    choice_probabilities,
    evaluate_tofu,
    forget_quality,
    harmonic_mean,
    load_retain_logs,
    model_utility,
    rouge_l_recall,
    save_retain_logs,
    summary,
    truth_ratio_score,
    truth_ratios,
)

FIXTURE = Path(__file__).parent / "fixtures" / "tofu"


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


def test_retain_logs_roundtrip_and_missing(tmp_path):
    with pytest.raises(LlmgenError, match="retain-model logs not found"):
        load_retain_logs(tmp_path / "missing.json")
    with pytest.raises(LlmgenError, match="needs retain-model logs"):
        load_retain_logs(None)
    path = save_retain_logs(tmp_path / "r.json", {"forget": {"per_example": {"truth_ratio": [0.5, 1.5]}}})
    assert load_retain_logs(path) == [0.5, 1.5]
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(LlmgenError, match="forget_truth_ratios"):
        load_retain_logs(tmp_path / "bad.json")


def test_evaluate_tofu_on_a_tiny_model(tiny_model_dir):
    from llmgen.backends import get_backend
    from llmgen.tofu import load_eval_sets

    backend = get_backend("hf", tiny_model_dir)
    sets = load_eval_sets(FIXTURE, "forget01")
    res = evaluate_tofu(backend, sets, retain_ratios=[0.9, 1.1, 1.0], max_new_tokens=4)
    for role in sets:
        assert 0 <= res[role]["prob"] <= 1 and 0 <= res[role]["rougeL"] <= 1 and res[role]["truth_ratio"] >= 0
        assert len(res[role]["generations"]) == len(sets[role])
    assert 0 <= res["forget_quality"] <= 1 and 0 <= res["model_utility"] <= 1
    # the probability is exp(logprob / tokens) of the backend's own scores
    fmt = PromptFormat()
    lls = backend.loglikelihood([(fmt.prompt(r["question"]), r["answer"]) for r in sets["retain"]])
    assert res["retain"]["prob"] == pytest.approx(np.mean([math.exp(x.logprob / x.num_tokens) for x in lls]))
    flat = summary(res)
    assert set(flat) >= {"forget_quality", "model_utility", "retain.prob", "world_facts.truth_ratio"}
    backend.close()

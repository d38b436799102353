"""pass@k against brute-force enumeration, the block estimate on hand data, curve bad input."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from llmgen.config import load_config
from llmgen.errors import LlmgenError
from llmgen.evals.passk import pass_at_k
from llmgen.recipes.confidence_limiting import ConfidenceLimitingConfig, passk_curve


def _brute_force(correct: list[bool], k: int) -> float:
    subsets = list(itertools.combinations(range(len(correct)), k))
    return sum(any(correct[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 5, 8, 10])
def test_pass_at_k_equals_subset_enumeration(n):
    for c in range(n + 1):
        correct = [True] * c + [False] * (n - c)
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(_brute_force(correct, k), abs=1e-12)


def _replicates_by_hand(correct: list[list[bool]], k: int) -> list[float]:
    """Dataset-level pass@k of each block index: the fraction of problems whose block r has a hit."""
    m = min(len(c) for c in correct)
    return [sum(any(c[r * k:(r + 1) * k]) for c in correct) / len(correct) for r in range(m // k)]


def test_curve_unbiased_matches_enumeration_and_blocks():
    rng = random.Random(0)
    correct = [[rng.random() < q for _ in range(8)] for q in (0.0, 0.1, 0.5, 0.9)]
    curve = passk_curve(correct, [1, 2, 4, 8])
    for k in (1, 2, 4, 8):
        expected = sum(_brute_force(c, k) for c in correct) / len(correct)
        assert curve[str(k)]["unbiased"] == pytest.approx(expected, abs=1e-12)
        reps = _replicates_by_hand(correct, k)
        assert curve[str(k)]["block"] == pytest.approx(sum(reps) / len(reps))
        assert curve[str(k)]["replicates"] == 8 // k
        if len(reps) > 1:
            mean = sum(reps) / len(reps)
            se = math.sqrt(sum((r - mean) ** 2 for r in reps) / (len(reps) - 1) / len(reps))
            assert curve[str(k)]["block_se"] == pytest.approx(se)
        else:
            assert math.isnan(curve[str(k)]["block_se"])


def test_block_estimate_on_hand_data():
    # 8 samples, blocks of 2: [F,F] [T,F] [F,F] [F,T] -> 0, 1, 0, 1; second problem never solved
    correct = [False, False, True, False, False, False, False, True]
    curve = passk_curve([correct, [False] * 8], [2, 4])
    # replicates (fraction of the 2 problems solved per block index): 0, 1/2, 0, 1/2
    assert curve["2"]["block"] == 0.25 and curve["2"]["replicates"] == 4
    assert curve["2"]["block_se"] == pytest.approx(math.sqrt(4 * 0.25**2 / 3) / 2)
    # blocks of 4: [F,F,T,F] [F,F,F,T] -> 1, 1 on the first problem; replicates 1/2, 1/2
    assert curve["4"]["block"] == 0.5 and curve["4"]["block_se"] == 0.0


def test_k_larger_than_samples_is_a_clear_error():
    with pytest.raises(LlmgenError, match="pass@5 needs at least 5 samples"):
        pass_at_k(4, 1, 5)
    with pytest.raises(LlmgenError, match="pass@5 needs at least 5 samples"):
        passk_curve([[True, False, True, False]], [5])
    with pytest.raises(LlmgenError, match="pass@128 needs at least 128 samples"):
        load_config(ConfidenceLimitingConfig, None, {"eval.num_samples": 64, "ks": [1, 128]}).validate()
    with pytest.raises(LlmgenError, match="empty"):
        passk_curve([], [1])


@pytest.mark.parametrize("field, value, message", [
    ("dco_n", 0, "N"), ("dco_n", -3, "N"), ("dco_n", 2.5, "dco_n: expected int"), ("methods", ("ce", "grpo"), "unknown method"),
    ("eval.num_samples", 0, "num_samples"), ("train.epochs", 0, "epochs"), ("eval.backend", "tgi", "backend"),
    ("eval.temperature", 0.0, "temperature"), ("task", "math", "train_data"),
    ("eval.top_p", 0.5, "eval.top_p: set by the ConfidenceLimitingConfig recipe"),
])
def test_config_bad_input(field, value, message):
    with pytest.raises(LlmgenError, match=message):
        load_config(ConfidenceLimitingConfig, None, {field: value}).validate()


def test_default_ks():
    def cfg(**values):
        return load_config(ConfidenceLimitingConfig, None, values)

    assert cfg(**{"eval.num_samples": 64}).kvalues() == [1, 2, 4, 8, 16, 32, 64]
    assert cfg(**{"eval.num_samples": 48}).kvalues() == [1, 2, 4, 8, 16, 32, 48]
    assert cfg(**{"eval.num_samples": 48, "ks": [16, 1, 16]}).kvalues() == [1, 16]


def test_compare_aligns_methods_on_common_epochs():
    """DCO's refill can end a run early; the comparison pairs the epochs both methods measured."""
    from llmgen.recipes.confidence_limiting import compare

    def hist(points):
        return [{"epoch": e, "passk": {"1": {"unbiased": p1}, "4": {"unbiased": p4}}} for e, p1, p4 in points]

    results = {"methods": {"ce": hist([(0, 0.1, 0.3), (1, 0.2, 0.4), (2, 0.3, 0.35)]),
                           "dco": hist([(0, 0.1, 0.3), (1, 0.15, 0.5), (1.5, 0.2, 0.55)])}}
    out = compare(results, load_config(ConfidenceLimitingConfig, None, {"eval.num_samples": 4, "dco_n": 4}))
    assert out["compared_epochs"] == [0, 1]
    assert out["dco_minus_ce_pass@4"] == pytest.approx([0.0, 0.1])
    assert out["dco"]["epochs"] == [0, 1, 1.5] and out["ce"]["pass@1_by_epoch"] == [0.1, 0.2, 0.3]

"""pass@k against brute-force enumeration, the block estimate on hand data, curve bad input."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from llmgen.errors import LlmgenError
from llmgen.evals.passk import block_pass_at_n, pass_at_k
from llmgen.recipes.confidence_limiting import ConfidenceLimitingConfig, eval_epochs, passk_curve


def _brute_force(correct: list[bool], k: int) -> float:
    subsets = list(itertools.combinations(range(len(correct)), k))
    return sum(any(correct[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 5, 8, 10])
def test_pass_at_k_equals_subset_enumeration(n):
    for c in range(n + 1):
        correct = [True] * c + [False] * (n - c)
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(_brute_force(correct, k), abs=1e-12)


def test_curve_unbiased_matches_enumeration_and_blocks():
    rng = random.Random(0)
    correct = [[rng.random() < q for _ in range(8)] for q in (0.0, 0.1, 0.5, 0.9)]
    curve = passk_curve(correct, [1, 2, 4, 8])
    for k in (1, 2, 4, 8):
        expected = sum(_brute_force(c, k) for c in correct) / len(correct)
        assert curve[str(k)]["unbiased"] == pytest.approx(expected, abs=1e-12)
        # pooled blocks: every problem has 8 // k blocks, so the mean is the mean of per-problem means
        per_problem = sum(block_pass_at_n(c, k)[0] for c in correct) / len(correct)
        assert curve[str(k)]["block"] == pytest.approx(per_problem)
        assert curve[str(k)]["blocks"] == len(correct) * (8 // k)


def test_block_estimate_on_hand_data():
    # 8 samples, blocks of 2: [F,F] [T,F] [F,F] [F,T] -> 0, 1, 0, 1
    correct = [False, False, True, False, False, False, False, True]
    mean, se = block_pass_at_n(correct, 2)
    assert mean == 0.5
    assert se == pytest.approx(math.sqrt(1 / 3) / 2)  # std (ddof=1) of 0,1,0,1 is sqrt(1/3)
    assert block_pass_at_n(correct, 4) == (1.0, 0.0)
    assert block_pass_at_n(correct + [True], 4)[0] == 1.0  # the leftover sample is dropped
    curve = passk_curve([correct, [False] * 8], [2])
    assert curve["2"]["block"] == 0.25 and curve["2"]["blocks"] == 8
    assert curve["2"]["block_se"] == pytest.approx(math.sqrt((2 * 0.75**2 + 6 * 0.25**2) / 7 / 8))


def test_k_larger_than_samples_is_a_clear_error():
    with pytest.raises(LlmgenError, match="pass@5 needs at least 5 samples"):
        pass_at_k(4, 1, 5)
    with pytest.raises(LlmgenError, match="pass@5 needs at least 5 samples"):
        passk_curve([[True, False, True, False]], [5])
    with pytest.raises(LlmgenError, match="pass@128 needs at least 128 samples"):
        ConfidenceLimitingConfig(samples=64, ks=[1, 128]).validate()
    with pytest.raises(LlmgenError, match="empty"):
        passk_curve([], [1])


@pytest.mark.parametrize("field, value, message", [
    ("dco_n", 0, "N"), ("dco_n", -3, "N"), ("dco_n", 2.5, "N"), ("methods", ("ce", "grpo"), "unknown method"),
    ("samples", 0, "samples"), ("epochs", 0, "epochs"), ("backend", "tgi", "backend"),
    ("temperature", 0.0, "temperature"), ("task", "math", "train_data"),
])
def test_config_bad_input(field, value, message):
    with pytest.raises(LlmgenError, match=message):
        ConfidenceLimitingConfig(**{field: value}).validate()


def test_default_ks():
    assert ConfidenceLimitingConfig(samples=64).kvalues() == [1, 2, 4, 8, 16, 32, 64]
    assert ConfidenceLimitingConfig(samples=48).kvalues() == [1, 2, 4, 8, 16, 32, 48]
    assert ConfidenceLimitingConfig(samples=48, ks=[16, 1, 16]).kvalues() == [1, 16]


def test_eval_epochs():
    assert eval_epochs(4, 1) == [1, 2, 3, 4]
    assert eval_epochs(10, 4) == [4, 8, 10]
    assert eval_epochs(3, 8) == [3]

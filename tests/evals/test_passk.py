"""pass@k against brute-force enumeration of k-subsets, and the block estimator on hand data."""

import itertools
import math

import pytest

from llmgen.errors import LlmgenError
from llmgen.evals.passk import block_pass_at_n, default_ks, mean_pass_at_k, pass_at_k


def brute_force(n: int, c: int, k: int) -> float:
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 5, 8, 10])
def test_pass_at_k_matches_enumeration(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_force(n, c, k), abs=1e-12)


def test_pass_at_k_closed_form_large_n():
    n, c, k = 200, 7, 50
    exact = 1 - math.comb(n - c, k) / math.comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(exact, rel=1e-12)


def test_pass_at_k_errors_instead_of_clamping():
    with pytest.raises(LlmgenError, match="pass@8 needs at least 8 samples"):
        pass_at_k(4, 1, 8)
    with pytest.raises(LlmgenError):
        pass_at_k(4, 5, 1)
    with pytest.raises(LlmgenError):
        mean_pass_at_k([], [], 1)


def test_default_ks_and_block_estimator():
    assert default_ks(16) == [1, 2, 4, 8, 16]
    assert default_ks(12) == [1, 2, 4, 8, 12]
    # two problems, 8 samples (+1 leftover on the first), blocks of 2:
    # problem 1: (F,F) (T,F) (F,F) (F,T) -> 0 1 0 1;  problem 2: (T,T) (F,F) (F,F) (T,F) -> 1 0 0 1
    correct = [[0, 0, 1, 0, 0, 0, 0, 1, 1], [1, 1, 0, 0, 0, 0, 1, 0]]
    mean, se, replicates = block_pass_at_n(correct, 2)
    # the reference notebook: per block index, the count of problems solved: 1, 1, 0, 2 out of 2;
    # mean 1/2, std_hat = sqrt(sum((c - 1)^2) / (R - 1)) = sqrt(2/3), se = std_hat / sqrt(R) / problems
    assert replicates == 4
    assert mean == pytest.approx(0.5)
    assert se == pytest.approx(math.sqrt(2 / 3) / 2 / 2)
    assert block_pass_at_n(correct, 8)[:2] == (1.0, pytest.approx(float("nan"), nan_ok=True))
    with pytest.raises(LlmgenError, match="at least 4 samples"):
        block_pass_at_n([[1, 0]], 4)
    with pytest.raises(LlmgenError, match="empty"):
        block_pass_at_n([], 1)

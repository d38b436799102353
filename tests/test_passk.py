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
    # blocks of 2: (F,T) (F,F) (T,T) (F,F) -> any = 1,0,1,0
    mean, se = block_pass_at_n([0, 1, 0, 0, 1, 1, 0, 0, 1], 2)
    assert mean == pytest.approx(0.5)
    assert se == pytest.approx(math.sqrt(1 / 3) / 2)
    with pytest.raises(LlmgenError):
        block_pass_at_n([1, 0], 4)

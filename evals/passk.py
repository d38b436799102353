"""pass@k: the unbiased estimator (Chen et al. 2021) and the block estimate (Chen et al. 2025).

The unbiased estimator 1 - C(n-c, k)/C(n, k) is computed in its stable product form
1 - prod_{i=n-c+1}^{n} (1 - k/i), which never forms huge binomials. Asking for k > n is an error,
not a silent clamp: the estimate does not exist.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from llmgen.errors import LlmgenError


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn without replacement from n (c correct) is correct."""
    if n < 1:
        raise LlmgenError(f"pass@k needs at least one sample, got n={n}")
    if not 0 <= c <= n:
        raise LlmgenError(f"number correct c={c} must be between 0 and n={n}")
    if k < 1:
        raise LlmgenError(f"pass@k needs k >= 1, got k={k}")
    if k > n:
        raise LlmgenError(f"pass@{k} needs at least {k} samples per problem, got n={n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def mean_pass_at_k(ns: Sequence[int], cs: Sequence[int], k: int) -> float:
    """pass@k averaged over problems."""
    if len(ns) == 0:
        raise LlmgenError("pass@k over an empty set of problems")
    return float(np.mean([pass_at_k(n, c, k) for n, c in zip(ns, cs, strict=True)]))


def default_ks(n: int) -> list[int]:
    """1, 2, 4, ... up to n (and n itself)."""
    ks = [2**i for i in range(int(math.log2(n)) + 1)] if n >= 1 else []
    if ks and ks[-1] != n:
        ks.append(n)
    return ks


def block_pass_at_n(correct: Sequence[Sequence[bool]], n: int) -> tuple[float, float, int]:
    """The paper's block estimate over a problems x samples correctness matrix: ``(mean, se, R)``.

    As in the reference notebook (allanraventos/refine ``nbs/eval.ipynb``), the M samples of every
    problem are cut into R = M // n disjoint blocks of n; replicate r is the fraction of problems
    whose r-th block holds a correct sample, a dataset-level pass@n. The estimate is the mean of the
    R replicates and its standard error std(ddof=1) / sqrt(R), so the error bar describes how much a
    whole-dataset pass@n moves from one draw of n samples to the next (NaN when R = 1). Leftover
    samples (M mod n) are dropped; M is the smallest sample count over problems.
    """
    if n < 1:
        raise LlmgenError(f"block size N must be >= 1, got {n}")
    if len(correct) == 0:
        raise LlmgenError("block pass@n over an empty set of problems")
    m = min(len(c) for c in correct)
    if m < n:
        raise LlmgenError(f"block pass@{n} needs at least {n} samples per problem, got {m}")
    from llmgen.evals.stats import standard_error

    r = m // n
    hits = np.asarray([list(c[: r * n]) for c in correct], dtype=bool).reshape(len(correct), r, n)
    replicates = hits.any(axis=2).mean(axis=0)  # [R]: per block index, the fraction of problems solved
    return float(replicates.mean()), standard_error(replicates), r

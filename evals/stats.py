"""Uncertainty and paired tests for evaluation scores: small pure functions over per-example values.

A benchmark number without an interval invites reading noise as progress: 40 examples give a
standard error of about 8 points on a 50% accuracy. These functions give every metric a standard
error and a seeded percentile-bootstrap interval, and compare two runs *on the same examples* with
paired tests (paired bootstrap; McNemar for 0/1 outcomes), which are far more sensitive than
comparing two independent intervals because per-example difficulty cancels out.

Every random function takes a ``seed`` so that ``results.json`` is reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

# scipy.special, not scipy.stats: importing scipy.stats (spatial, sparse, ...) cost every `llmgen eval`
# about a second of start-up; these are the special functions its t, binom and chi2 evaluate
from scipy import special

from llmgen.errors import LlmgenError

# Resamples are drawn in chunks so that 10,000 resamples of 100,000 examples never allocate 8 GB.
_CHUNK_ELEMENTS = 2_000_000
# Below this many discordant pairs McNemar uses the exact binomial test; the chi-square
# approximation is poor for small counts (the usual rule of thumb is b + c < 25).
EXACT_MCNEMAR_BELOW = 25


def _as_array(values: Iterable[float], name: str = "values") -> np.ndarray:
    arr = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=float)
    if arr.ndim != 1:
        raise LlmgenError(f"{name} must be a flat list of numbers, got shape {arr.shape}")
    if arr.size == 0:
        raise LlmgenError(f"{name} is empty: no per-example scores to summarise")
    if not np.all(np.isfinite(arr)):
        raise LlmgenError(f"{name} contains NaN or infinite scores")
    return arr


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise LlmgenError(f"confidence must be between 0 and 1 (exclusive), got {confidence}")


def _check_resamples(n_resamples: int) -> None:
    if n_resamples < 1:
        raise LlmgenError(f"bootstrap needs at least one resample, got {n_resamples}")


def standard_error(values: Iterable[float]) -> float:
    """Standard error of the mean, sample standard deviation (ddof=1) over sqrt(n); NaN for n < 2."""
    arr = _as_array(values)
    if arr.size < 2:
        return float("nan")
    return float(arr.std(ddof=1) / math.sqrt(arr.size))


def bootstrap_means(values: Iterable[float], n_resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """Means of ``n_resamples`` resamples (with replacement, same size) of ``values``."""
    arr = _as_array(values)
    _check_resamples(n_resamples)
    rng = np.random.default_rng(seed)
    n = arr.size
    out = np.empty(n_resamples)
    step = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, n_resamples, step):
        stop = min(n_resamples, start + step)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = arr[idx].mean(axis=1)
    return out


def bootstrap_ci(values: Iterable[float], confidence: float = 0.95, n_resamples: int = 1000,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval for the mean: the (1-c)/2 and (1+c)/2 quantiles of resampled means."""
    _check_confidence(confidence)
    return _percentile_interval(bootstrap_means(values, n_resamples, seed), confidence)


def _percentile_interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    """The (1-c)/2 and (1+c)/2 quantiles of bootstrap replicates (NaN when none is finite)."""
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return float("nan"), float("nan")
    alpha = 1.0 - confidence
    low, high = np.quantile(samples, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def bootstrap_statistic_ci(groups: Sequence[Sequence[int]], statistic: Callable[[np.ndarray], Sequence[float]],
                           confidence: float = 0.95, n_resamples: int = 1000,
                           seed: int = 0) -> list[tuple[float, float]]:
    """Percentile bootstrap intervals of corpus statistics that are not means of per-example values.

    TOFU's forget quality (a KS p-value) and model utility (a harmonic mean of nine set means)
    cannot be resampled as means (:func:`bootstrap_ci`), so each replicate recomputes them:
    ``statistic(indices)`` returns one value per statistic for example indices drawn with
    replacement *within* each of ``groups`` (stratified: every set keeps its size, as TOFU's
    forget/retain/utility sets are fixed by design). One interval per statistic, in order;
    replicates where a statistic is undefined (NaN) are dropped from its interval.
    """
    _check_confidence(confidence)
    _check_resamples(n_resamples)
    arrays = [np.asarray(g, dtype=int) for g in groups if len(g)]
    if not arrays:
        raise LlmgenError("bootstrap of a statistic needs at least one example")
    rng = np.random.default_rng(seed)
    reps = np.array([np.asarray(statistic(np.concatenate([g[rng.integers(0, g.size, g.size)] for g in arrays])),
                                dtype=float) for _ in range(n_resamples)])
    return [_percentile_interval(reps[:, k], confidence) for k in range(reps.shape[1])]


def summarize(values: Iterable[float], seed: int = 0, n_resamples: int = 1000,
              confidence: float = 0.95) -> dict[str, float]:
    """Uncertainty for one metric from its per-example values, ready for ``results.json``.

    Returns ``{"mean", "stderr", "ci_low", "ci_high", "n"}``; the interval is the seeded
    percentile bootstrap of the mean. Non-finite values (a metric undefined for an example) are
    dropped; if none remain every field but ``n`` is NaN.
    """
    arr = np.asarray(list(values), dtype=float)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        nan = float("nan")
        return {"mean": nan, "stderr": nan, "ci_low": nan, "ci_high": nan, "n": 0}
    low, high = bootstrap_ci(arr, confidence, n_resamples, seed)
    return {"mean": float(arr.mean()), "stderr": standard_error(arr), "ci_low": low, "ci_high": high,
            "n": int(arr.size)}


def t_interval(values: Iterable[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)``: Student-t interval of the mean of a few independent runs (e.g. seeds).

    Across 3 seeds the bootstrap is meaningless (27 resamples), so seed-to-seed figures use the
    t interval mean ± t_{(1+c)/2, n-1} · s/√n with the sample standard deviation (ddof=1). It
    assumes roughly normal run-to-run noise; with n = 3 the multiplier is 4.30, so the interval is
    wide by construction. Needs at least 2 values.
    """
    arr = _as_array(values)
    _check_confidence(confidence)
    if arr.size < 2:
        raise LlmgenError(f"a t interval needs at least 2 runs, got {arr.size}")
    mean = float(arr.mean())
    half = float(special.stdtrit(arr.size - 1, (1.0 + confidence) / 2.0)) * standard_error(arr)
    return mean, mean - half, mean + half


@dataclass(frozen=True)
class PairedBootstrapResult:
    """Mean difference ``a - b`` over the same examples, its interval and a two-sided p-value."""

    mean_a: float
    mean_b: float
    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int
    n_resamples: int

    def as_dict(self) -> dict:
        return asdict(self)


def _paired(a: Iterable[float], b: Iterable[float]) -> tuple[np.ndarray, np.ndarray]:
    xa, xb = _as_array(a, "run A scores"), _as_array(b, "run B scores")
    if xa.size != xb.size:
        raise LlmgenError(f"paired test needs the same examples in both runs, got {xa.size} and {xb.size}")
    return xa, xb


def paired_bootstrap(a: Iterable[float], b: Iterable[float], n_resamples: int = 10_000, seed: int = 0,
                     confidence: float = 0.95) -> PairedBootstrapResult:
    """Paired bootstrap for the difference of two runs' per-example scores (same order, same examples).

    Examples are resampled *jointly*, so per-example difficulty cancels. The p-value is the
    two-sided shift test (Berg-Kirkpatrick et al. 2012): resampled differences are centred on the
    observed difference to approximate the null, and we count how often they are at least as far
    from zero as the observed one, with the usual +1 correction so that p is never exactly 0.
    """
    _check_confidence(confidence)
    xa, xb = _paired(a, b)
    d = xa - xb
    boots = bootstrap_means(d, n_resamples, seed)
    observed = float(d.mean())
    alpha = 1.0 - confidence
    low, high = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    extreme = np.count_nonzero(np.abs(boots - observed) >= abs(observed) - 1e-12)
    p = (extreme + 1) / (n_resamples + 1)
    return PairedBootstrapResult(float(xa.mean()), float(xb.mean()), observed, float(low), float(high),
                                 float(min(1.0, p)), int(d.size), int(n_resamples))


@dataclass(frozen=True)
class McNemarResult:
    """McNemar's test on paired 0/1 outcomes.

    ``b`` counts examples right in A and wrong in B, ``c`` the reverse; only these discordant pairs
    carry information about which run is better.
    """

    b: int
    c: int
    statistic: float
    p_value: float
    method: str  # "exact" (two-sided binomial) or "chi2" (continuity-corrected)

    def as_dict(self) -> dict:
        return asdict(self)


def mcnemar_counts(b: int, c: int, exact: bool | None = None) -> McNemarResult:
    """McNemar's test from discordant counts ``b`` (A right, B wrong) and ``c`` (A wrong, B right).

    ``exact=None`` picks the exact binomial test when b + c < 25 and the continuity-corrected
    chi-square (|b - c| - 1)^2 / (b + c) otherwise. The exact statistic reported is min(b, c).
    """
    if b < 0 or c < 0:
        raise LlmgenError(f"McNemar counts must be non-negative, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return McNemarResult(b, c, 0.0, 1.0, "exact" if exact is not False else "chi2")
    if exact is None:
        exact = n < EXACT_MCNEMAR_BELOW
    if exact:
        k = min(b, c)
        p = min(1.0, 2.0 * float(special.bdtr(k, n, 0.5)))
        return McNemarResult(b, c, float(k), p, "exact")
    stat = (abs(b - c) - 1.0) ** 2 / n if abs(b - c) >= 1 else 0.0
    return McNemarResult(b, c, float(stat), float(special.chdtrc(1, stat)), "chi2")


def is_binary(values: Iterable[float]) -> bool:
    """True when every value is 0 or 1 (the case where McNemar applies)."""
    arr = np.asarray(list(values), dtype=float)
    return arr.size > 0 and bool(np.all((arr == 0) | (arr == 1)))


def mcnemar(a: Iterable[float], b: Iterable[float], exact: bool | None = None) -> McNemarResult:
    """McNemar's test for two runs' paired 0/1 outcomes on the same examples (same order)."""
    xa, xb = _paired(a, b)
    if not (is_binary(xa) and is_binary(xb)):
        raise LlmgenError("McNemar's test needs 0/1 outcomes; use the paired bootstrap for other scores")
    n10 = int(np.count_nonzero((xa == 1) & (xb == 0)))
    n01 = int(np.count_nonzero((xa == 0) & (xb == 1)))
    return mcnemar_counts(n10, n01, exact)

"""FormatSpread metrics: answer scoring, the budgeted bandit over formats, perturbation analysis.

Everything here is pure: the bandit only sees ``evaluate(arm, start, stop) -> list[bool]`` (was
each of examples ``start..stop-1`` answered correctly under format ``arm``), so it runs the same on
a live model and on cached outcomes, which is how the benchmark compares it to exhaustive search.

The bandit follows the reference code (msclar/formatspread, ``format_evaluation.py``,
``ThompsonSamplingAlgorithmAmongPrompts``): the Beta prior b = 5, a = max(5·p0/(1−p0), 1.1) from
the original format's accuracy p0; phase 1 searches the maximum and fixes the reported best format
at its end, phase 2 continues from phase 1's counts, searches the minimum and fixes the worst.
Departures, each because the reference has no answer there: it is seeded; at p0 = 1, where the
reference divides by zero, p0 is taken as n/(n+1) (one virtual failure, a = 5n); the UCB variant
tries unseen arms first and subtracts its bonus when looking for the minimum.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from llmgen.errors import LlmgenError

STRIP = " .,()\n-><"
PRIOR_B = 5.0
PRIOR_A_MIN = 1.1


# --- scoring -----------------------------------------------------------------------------------------

def normalize_answer(text: str) -> str:
    """The reference's clean-up: strip `` .,()\\n-><`` at both ends and lowercase."""
    return text.strip(STRIP).lower()


def prefix_match(generation: str, answer: str) -> bool:
    """Does the (normalised) generation start with the answer as a whole word?

    "a" must not match "article", nor "i" match "ii": the next character may not be a letter or digit.
    """
    gen, ans = normalize_answer(generation), normalize_answer(answer)
    if not ans or not gen.startswith(ans):
        return False
    return len(gen) == len(ans) or not gen[len(ans)].isalnum()


def exact_prefix_matching(generation: str, gold: str) -> bool:
    """Correct when the greedy generation starts with the gold label (``prefix_match``)."""
    return prefix_match(generation, gold)


# --- the bandit -------------------------------------------------------------------------------------

Evaluate = Callable[[int, int, int], Sequence[bool]]


@dataclass
class BanditResult:
    """Outcome of a budgeted search. Counts are over examples; arm ``original`` was fully evaluated."""

    best: int
    worst: int
    successes: list[int]
    counts: list[int]
    budget_spent: int  # evaluations charged to the budget E (phases 1 and 2)
    total_evaluations: int  # including the original's full evaluation and the final re-evaluations
    prior: tuple[float, float]
    history: list[dict] = field(default_factory=list)

    def accuracy(self, arm: int) -> float:
        return self.successes[arm] / self.counts[arm] if self.counts[arm] else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        return self.accuracy(self.worst), self.accuracy(self.best)

    @property
    def spread(self) -> float:
        return self.accuracy(self.best) - self.accuracy(self.worst)


def beta_prior(successes: int, total: int) -> tuple[float, float]:
    """Beta(a, b) with mean p0 = successes/total: b = 5, a = max(5·p0/(1−p0), 1.1), as the reference.

    Only p0 = 1 is special (the reference divides by zero there): p0 becomes total/(total+1), i.e.
    a = 5·total, a prior as sure of the original as its ``total`` examples allow.
    """
    if total < 1 or not 0 <= successes <= total:
        raise LlmgenError(f"original format needs 0 <= successes <= total, total >= 1; got {successes}/{total}")
    if successes == total:
        return max(PRIOR_B * total, PRIOR_A_MIN), PRIOR_B
    p0 = successes / total
    return max(PRIOR_B * p0 / (1 - p0), PRIOR_A_MIN), PRIOR_B


def check_budget(budget: int, batch: int, num_examples: int, num_arms: int) -> None:
    """Raise a clear error for budgets the search cannot spend as asked."""
    if batch < 1:
        raise LlmgenError(f"batch size must be >= 1, got {batch}")
    if num_examples < batch:
        raise LlmgenError(f"batch size {batch} is larger than the {num_examples} evaluation examples")
    if budget < 2 * batch:
        raise LlmgenError(f"budget {budget} is too small: two phases need at least 2 batches of {batch}")
    if budget % batch:
        raise LlmgenError(f"budget {budget} is not divisible by the batch size {batch}")
    if (budget // batch) % 2:
        raise LlmgenError(f"budget {budget} gives {budget // batch} batches; the two phases need an even number")
    if num_arms < 2:
        raise LlmgenError(f"a format search needs at least 2 formats, got {num_arms}")


def bandit_spread(evaluate: Evaluate, num_arms: int, num_examples: int, budget: int, batch: int,
                  seed: int = 0, original: int = 0, rule: str = "thompson") -> BanditResult:
    """Find the best and worst formats with ``budget`` evaluations (Thompson sampling or UCB).

    Each arm consumes examples in a fixed order, ``batch`` at a time. The original format is
    evaluated in full first (outside the budget) and sets every arm's prior. Phase 1 (half the
    budget) pulls the arm with the highest posterior draw; the best format is the highest empirical
    accuracy among evaluated arms at the end of phase 1. Phase 2 continues from phase 1's counts and
    pulls the lowest draw; the worst format is the lowest empirical accuracy at its end. Both are
    then evaluated on all their remaining examples (outside the budget), as in the reference.
    Ties go to the lower arm index.
    """
    if rule not in ("thompson", "ucb"):
        raise LlmgenError(f"unknown bandit rule {rule!r} (known: thompson, ucb)")
    check_budget(budget, batch, num_examples, num_arms)
    if not 0 <= original < num_arms:
        raise LlmgenError(f"original arm {original} out of range for {num_arms} formats")
    rng = np.random.default_rng(seed)
    succ = [0] * num_arms
    cnt = [0] * num_arms

    def pull(arm: int, stop: int | None = None) -> int:
        end = min(num_examples, cnt[arm] + batch) if stop is None else stop
        out = list(evaluate(arm, cnt[arm], end))
        if len(out) != end - cnt[arm]:
            raise LlmgenError(f"evaluate returned {len(out)} outcomes for {end - cnt[arm]} examples")
        succ[arm] += sum(map(bool, out))
        cnt[arm] = end
        return len(out)

    total = pull(original, num_examples)
    a0, b0 = beta_prior(succ[original], num_examples)
    spent, history, chosen = 0, [], {}
    for phase, sign in (("best", 1.0), ("worst", -1.0)):
        for step in range(budget // batch // 2):
            open_arms = [i for i in range(num_arms) if cnt[i] < num_examples]
            if not open_arms:
                break
            if rule == "thompson":
                draws = rng.beta(a0 + np.array([succ[i] for i in open_arms]),
                                 b0 + np.array([cnt[i] - succ[i] for i in open_arms]))
            else:  # UCB on the empirical mean; untried arms first; the bonus flips sign for the minimum
                draws = np.array([sign * math.inf if cnt[i] == 0 else
                                  succ[i] / cnt[i] + sign * 2 * math.sqrt(math.log(1 + step) / cnt[i])
                                  for i in open_arms])
            arm = open_arms[int(np.argmax(draws) if sign > 0 else np.argmin(draws))]
            n = pull(arm)
            spent += n
            history.append({"phase": phase, "arm": arm, "examples": n, "accuracy": succ[arm] / cnt[arm]})
        chosen[phase] = empirical_extreme(succ, cnt, highest=sign > 0)
    best, worst = chosen["best"], chosen["worst"]
    for arm in dict.fromkeys((best, worst)):
        if cnt[arm] < num_examples:
            total += pull(arm, num_examples)
    return BanditResult(best, worst, succ, cnt, spent, total + spent, (a0, b0), history)


def max_evaluations(num_arms: int, num_examples: int, budget: int | None) -> int:
    """The most (format, example) evaluations a search makes (a progress bar's total): every cell
    when exhaustive; for the bandit, the original format in full, the budget, and the best and
    worst formats completed, never more than every cell."""
    cells = num_arms * num_examples
    return cells if budget is None else min(cells, num_examples + budget + 2 * num_examples)


def empirical_extreme(successes: Sequence[int], counts: Sequence[int], highest: bool) -> int:
    """The arm with the highest (or lowest) empirical accuracy among evaluated arms; ties: lowest index."""
    evaluated = [i for i in range(len(counts)) if counts[i]]
    sign = 1 if highest else -1
    return max(evaluated, key=lambda i: (sign * successes[i] / counts[i], -i))


def exhaustive_spread(outcomes: np.ndarray) -> dict:
    """Best/worst/spread from a full (formats × examples) matrix of correct answers."""
    acc = np.asarray(outcomes, dtype=float).mean(axis=1)
    best, worst = int(np.argmax(acc)), int(np.argmin(acc))
    return {"best": best, "worst": worst, "max": float(acc[best]), "min": float(acc[worst]),
            "spread": float(acc[best] - acc[worst]), "evaluations": int(np.asarray(outcomes).size)}


def spread_summary(values: Sequence[float], original: float) -> dict[str, float]:
    """One metric over formats: the original format's value, min, median, max, spread (max - min), count."""
    return {"original": original, "min": min(values), "median": float(np.median(values)),
            "max": max(values), "spread": max(values) - min(values), "formats": len(values)}


# --- atomic perturbations ---------------------------------------------------------------------------

def atomic_perturbations(formats: Sequence[Mapping[str, str]], accuracies: Sequence[float],
                         attributes: Sequence[str]) -> dict:
    """Pairs of formats that differ in exactly one attribute, and the accuracy change per attribute.

    ``formats`` map each of the ``attributes`` to its value (``{a: fmt.get(a) for a in attributes}``
    for ``llmgen.prompts.formats.Format``); formats with a NaN accuracy (never evaluated) are skipped.
    """
    idx = [i for i, a in enumerate(accuracies) if not math.isnan(a)]
    pairs = []
    for x in range(len(idx)):
        for y in range(x + 1, len(idx)):
            i, j = idx[x], idx[y]
            diff = [k for k in attributes if formats[i][k] != formats[j][k]]
            if len(diff) == 1:
                k = diff[0]
                pairs.append({"attribute": k, "from": formats[i][k], "to": formats[j][k],
                              "formats": [i, j], "delta": accuracies[j] - accuracies[i]})
    summary = {}
    for k in attributes:
        deltas = [abs(p["delta"]) for p in pairs if p["attribute"] == k]
        if deltas:
            summary[k] = {"pairs": len(deltas), "mean_abs_delta": float(np.mean(deltas)),
                          "max_abs_delta": float(np.max(deltas))}
    return {"pairs": pairs, "by_attribute": summary}

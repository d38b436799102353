"""One scorer per metric: the answer filters, the metric registry and the per-document scoring that
every evaluation path calls (plain ``llmgen eval``, ``--formats``, the FormatSpread bandit, the recipes).

``generation_scores`` and ``choice_scores`` turn one document's responses (or its choices'
loglikelihoods) into that document's metrics and its per-sample outcome ``correct``:
``correct[j]`` is the task's *first* metric (``pass@k`` aside; ``exact_match`` when only ``pass@k``
is listed) scored on sample ``j`` alone, equal to 1. ``pass@k`` counts these outcomes, and the
FormatSpread bandit's 0/1 reward is ``correct[0]`` (the first metric on the first sample). This module
depends only on ``llmgen.errors``/``registry``, ``llmgen.tasks.math_answers`` and ``llmgen.evals``, so
every layer above (tasks, the runner, the prompt layer, recipes) can import it.
"""

from __future__ import annotations

import math as pymath  # not "math": the llmgen.tasks.math submodule takes that name in this package
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from llmgen.errors import LlmgenError
from llmgen.evals.format_spread import exact_prefix_matching
from llmgen.evals.passk import pass_at_k
from llmgen.registry import Registry
from llmgen.tasks.math_answers import (
    canonical_math_answer,
    extract_answer,
    last_boxed_answer,
    normalize_final_answer,
)

# --- answer extractors ---------------------------------------------------------------------------
# A filter step maps the list of a document's responses to a new list (lm-eval's Filter.apply on one
# document). Per-response steps (regex, numbers, strip, math) keep the list's length; reducing steps
# (take_first, majority_vote) return one element. FILTERS maps a name to a factory taking the step's
# keyword arguments, so a YAML ``filters:`` list is read without special cases.

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def _clean_number(s: str) -> str:
    s = s.replace(",", "")
    return s[:-2] if s.endswith(".0") else s


def first_number(text: str) -> str:
    """The first number in a response (commas dropped, trailing ``.0`` removed), or ``""``."""
    m = _NUMBER.search(text)
    return _clean_number(m.group(0)) if m else ""


def last_number(text: str) -> str:
    """The last number in a response (commas dropped, trailing ``.0`` removed), or ``""``."""
    found = _NUMBER.findall(text)
    return _clean_number(found[-1]) if found else ""


def strip_answer(text: str) -> str:
    return text.strip().rstrip(".").strip()


def math_answer(text: str) -> str:
    """A math answer (``\\boxed{}``, "final answer", last number), normalised (see math_answers)."""
    return canonical_math_answer(extract_answer(text))


def math_normalize(text: str) -> str:
    """A reference answer normalised like ``math_answer``'s output (equal strings = equal answers)."""
    return canonical_math_answer(text)


def regex_extract(pattern: str, group_select: int = 0, fallback: str = "[invalid]") -> Callable[[str], str]:
    """lm-eval's ``regex`` filter: the ``group_select``-th match (``-1`` = last) of ``findall``.

    As in lm-eval, a pattern with several groups yields the first non-empty group of the match, and
    the result is stripped; no match (or an out-of-range selection) gives ``fallback``.
    """
    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise LlmgenError(f"bad regex_pattern {pattern!r}: {e}") from None

    def extract(text: str) -> str:
        found = rx.findall(text)
        if not found or not -len(found) <= group_select < len(found):
            return fallback
        m = found[group_select]
        if isinstance(m, tuple):
            m = next((g for g in m if g), fallback)
        return m.strip()

    return extract


FilterStep = Callable[[list[str]], list[str]]
FILTERS: Registry[Callable[..., FilterStep]] = Registry("filter")


def _per_response(fn: Callable[[str], str]) -> FilterStep:
    step = lambda responses: [fn(r) for r in responses]  # noqa: E731
    step.per_response = True  # type: ignore[attr-defined]
    return step


FILTERS.register("strip", lambda: _per_response(strip_answer))
FILTERS.register("first_number", lambda: _per_response(first_number))
FILTERS.register("last_number", lambda: _per_response(last_number))
FILTERS.register("math", lambda: _per_response(math_answer))
FILTERS.register("math_normalize", lambda: _per_response(math_normalize))
# the pass@N reference's grading (refine nbs/eval.ipynb): the last \boxed{} answer, normalize_final_answer
FILTERS.register("math_boxed", lambda: _per_response(lambda t: normalize_final_answer(last_boxed_answer(t) or "")))
FILTERS.register("math_boxed_normalize", lambda: _per_response(normalize_final_answer))
FILTERS.register("lowercase", lambda: _per_response(str.lower))
FILTERS.register("regex", lambda regex_pattern=r"#### (\-?[0-9\.\,]+)", group_select=0, fallback="[invalid]":
                 _per_response(regex_extract(regex_pattern, int(group_select), fallback)))
FILTERS.register("take_first", lambda: lambda responses: responses[:1])
FILTERS.register("majority_vote", lambda: lambda responses: [Counter(responses).most_common(1)[0][0]] if responses else [])


def build_filters(spec: str | Sequence[str | dict[str, Any]]) -> list[FilterStep]:
    """Filter steps from a name (``"strip"``) or a list of names / ``{function: name, **kwargs}``."""
    steps = [spec] if isinstance(spec, str) else list(spec)
    out = []
    for s in steps:
        name, kwargs = (s, {}) if isinstance(s, str) else (s.get("function"), {k: v for k, v in s.items() if k != "function"})
        if not isinstance(name, str):
            raise LlmgenError(f"a filter step needs a 'function' name, got {s!r}")
        factory = FILTERS.get(name)
        try:
            out.append(factory(**kwargs))
        except TypeError:
            raise LlmgenError(f"filter {name!r}: bad arguments {sorted(kwargs)}") from None
    return out


def apply_filters(steps: Sequence[FilterStep], responses: list[str], per_response_only: bool = False) -> list[str]:
    for step in steps:
        if per_response_only and not getattr(step, "per_response", False):
            continue
        responses = step(responses)
    return responses


# --- metrics -------------------------------------------------------------------------------------
# A metric scores one document (``score``) and aggregates the per-document values (``aggregate``):
# accuracies are means; perplexities are corpus-level ratios of (loglikelihood, count) pairs, as in
# lm-eval's weighted_perplexity / bits_per_byte.


@dataclass(frozen=True)
class Scored:
    """What a metric sees for one document."""

    predictions: list[str] = field(default_factory=list)  # filtered responses (generate)
    correct: list[bool] = field(default_factory=list)  # per raw response, per-response filters only
    gold: str = ""
    responses: list[str] = field(default_factory=list)  # raw responses
    choice_logprobs: list[float] = field(default_factory=list)
    choices: list[str] = field(default_factory=list)
    gold_index: int = -1
    loglikelihood: float = 0.0
    num_words: int = 0  # word and byte counts of a rolling text (the backend's RollingResult, lm-eval's rules)
    num_bytes: int = 0
    values: dict[str, Any] = field(default_factory=dict)  # the metrics' per-document values (generation_scores)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def weighted_perplexity(items: Sequence[tuple[float, int]]) -> float:
    """exp(-Σ loglikelihood / Σ count) (lm-eval's weighted_perplexity)."""
    return pymath.exp(-sum(a for a, _ in items) / sum(b for _, b in items))


def bits_per_byte(items: Sequence[tuple[float, int]]) -> float:
    """-Σ loglikelihood / Σ bytes / ln 2 (lm-eval's bits_per_byte)."""
    return -sum(a for a, _ in items) / sum(b for _, b in items) / pymath.log(2)


@dataclass(frozen=True)
class Metric:
    output_type: str
    score: Callable[[Scored], Any]
    aggregate: Callable[[list], float] = _mean


METRICS: Registry[Metric] = Registry("metric")


def _exact_match(s: Scored) -> float:
    return _mean([float(bool(p) and p == s.gold) for p in s.predictions])


def choice_prediction(logprobs: Sequence[float], lengths: Sequence[float]) -> int:
    """The index lm-eval 0.4.13 predicts (``api/task.py`` ``process_results``, multiple_choice):
    ``np.argmax(lls / lengths)`` in float64, first index on ties, a zero length giving numpy's
    ±inf/nan rather than an error, so every case, empty choices included, is lm-eval's."""
    import numpy as np

    with np.errstate(divide="ignore", invalid="ignore"):
        return int(np.argmax(np.asarray(logprobs, dtype=np.float64) / np.asarray(lengths, dtype=np.float64)))


def _choice_acc(norm: Callable[[str], float]) -> Callable[[Scored], float]:
    return lambda s: float(choice_prediction(s.choice_logprobs, [norm(c) for c in s.choices]) == s.gold_index)


METRICS.register("exact_match", Metric("generate", _exact_match))
METRICS.register("contains", Metric("generate", lambda s: _mean([float(s.gold.lower() in r.lower()) for r in s.responses])))
METRICS.register("pass@k", Metric("generate", lambda s: None))  # expanded to pass@1, pass@2, ... (pass_at_k_metrics)
# FormatSpread's generation metric (the reference's ``prefix_match``): the response starts with the gold label
METRICS.register("exact_prefix_match", Metric("generate", lambda s: _mean([float(exact_prefix_matching(r, s.gold))
                                                                         for r in s.responses])))
METRICS.register("acc", Metric("multiple_choice", _choice_acc(lambda c: 1.0)))
# lm-eval 0.4.13 (api/task.py process_results): acc_norm divides by the choice's length in characters
# (``len(choice)`` of the choice string, without target_delimiter), acc_bytes by its UTF-8 bytes
METRICS.register("acc_norm", Metric("multiple_choice", _choice_acc(lambda c: float(len(c)))))
METRICS.register("acc_bytes", Metric("multiple_choice", _choice_acc(lambda c: float(len(c.encode("utf-8"))))))
METRICS.register("word_perplexity", Metric("loglikelihood_rolling", lambda s: (s.loglikelihood, s.num_words),
                                           weighted_perplexity))
METRICS.register("byte_perplexity", Metric("loglikelihood_rolling", lambda s: (s.loglikelihood, s.num_bytes),
                                           weighted_perplexity))
METRICS.register("bits_per_byte", Metric("loglikelihood_rolling", lambda s: (s.loglikelihood, s.num_bytes),
                                         bits_per_byte))

DEFAULT_METRICS = {"generate": ("exact_match",), "multiple_choice": ("acc", "acc_norm"),
                   "loglikelihood_rolling": ("word_perplexity", "byte_perplexity", "bits_per_byte")}
# Answer extraction applied to the reference when the task names none: numbers compare as numbers,
# math answers as normalised math answers, anything else as stripped text.
_DEFAULT_TARGET_FILTER = {"first_number": "first_number", "last_number": "first_number", "math": "math_normalize",
                          "math_boxed": "math_boxed_normalize"}


# --- one document's scores -----------------------------------------------------------------------

def outcome_metric(metrics: Sequence[str], output_type: str = "generate") -> str:
    """The metric that decides a sample's 0/1 outcome: the first one listed (``pass@k`` aside), else
    the output type's default (``exact_match`` / ``acc``)."""
    named = [m for m in metrics if m != "pass@k"]
    return named[0] if named else DEFAULT_METRICS[output_type][0]


def generation_scores(metrics: Sequence[str], filters: Sequence[FilterStep], gold: str,
                      responses: list[str], outcome: str | None = None) -> Scored:
    """One document's responses through the filters and every metric of ``metrics`` (``pass@k``
    aside): ``predictions`` (filtered), ``correct`` (the outcome metric, by default the first listed,
    on each response alone) and the metric values in ``values``."""
    outcome = METRICS.get(outcome or outcome_metric(metrics))
    correct = [outcome.score(Scored(predictions=apply_filters(filters, [r]), gold=gold, responses=[r])) == 1.0
               for r in responses]
    scored = Scored(predictions=apply_filters(filters, responses), correct=correct, gold=gold, responses=responses)
    return replace(scored, values={m: METRICS.get(m).score(scored) for m in metrics if m != "pass@k"})


def choice_scores(metrics: Sequence[str], choices: list[str], logprobs: list[float], gold_index: int,
                  outcome: str | None = None) -> Scored:
    """One document's choice loglikelihoods through every metric of ``metrics``; ``correct`` is the
    outcome metric (by default the first listed) as one 0/1 sample, ``predictions`` the most likely choice."""
    scored = Scored(choice_logprobs=logprobs, choices=choices, gold_index=gold_index,
                    predictions=[choices[choice_prediction(logprobs, [1.0] * len(logprobs))]])
    values = {m: METRICS.get(m).score(scored) for m in metrics}
    first = outcome or outcome_metric(metrics, "multiple_choice")
    correct = [(values[first] if first in values else METRICS.get(first).score(scored)) == 1.0]
    return replace(scored, correct=correct, values=values)


def pass_at_k_metrics(correct: Sequence[bool], ks: Sequence[int]) -> dict[str, float]:
    """``pass@k`` for each k from the per-sample outcomes (the unbiased estimator of ``evals.passk``)."""
    return {f"pass@{k}": pass_at_k(len(correct), sum(correct), k) for k in ks}

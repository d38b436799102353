"""TOFU metrics (Maini et al. 2024), as the benchmark's own code defines them.

Every probability is *length-normalised*: P̃(a|q) = P(a|q)^(1/|a|) = exp(logprob / num_tokens),
where the answer's tokens end with the EOS token, as TOFU's labels do (``data_module``'s
``convert_raw_data_to_model_format`` appends EOS to every scored answer).

- Probability: forget/retain → mean P̃(answer|q); real authors/world facts → mean of
  P̃(answer) / (P̃(answer) + Σ P̃(perturbed)).
- ROUGE-L recall of the greedy generation (up to 200 new tokens, stopping only at EOS) against
  the answer (rouge-score, Porter stemming).
- Truth ratio R = GM_j P̃(perturbed_j) / P̃(base) (geometric mean over perturbed answers; the base
  is the paraphrase on forget/retain and the answer itself on the utility sets, which have no
  paraphrase: ``llmgen.tasks.tofu.BASE_ANSWER_KEY``). Forget aggregate mean(min(R,1/R))
  (closeness to a model that never saw the data); others mean(max(0, 1 − R)) (preferring truth).
- Forget quality: p-value of the two-sample KS test between the forget-set truth ratios of the
  evaluated model and of a model trained on the retain set only ("retain logs").
- Model utility: harmonic mean of the nine {retain, real authors, world facts} × {probability,
  ROUGE-L, truth ratio} values, so one collapsed metric pulls utility to zero.

Everything here is a pure function of scores and texts (no backend calls, no files): the TOFU
task (``llmgen.tasks.tofu.TofuTask``) builds the requests, the runner (``llmgen.evaluate``) sends them,
:func:`example_metrics` scores one row and :func:`summarize` turns the rows into TOFU's aggregates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from llmgen.errors import LlmgenError

UTILITY_SPLITS = ("retain", "real_authors", "world_facts")
UTILITY_METRICS = ("prob", "rougeL", "truth_ratio")
TRUE_VS_PERTURBED = ("real_authors", "world_facts")
"""The sets whose probability is P̃(answer) relative to the perturbed answers (TOFU's utility sets)."""


# --- pure metrics ---------------------------------------------------------------------------------


def normalised_prob(logprob: float | np.ndarray, num_tokens: int | np.ndarray) -> np.ndarray:
    """P(a|q)^(1/|a|) from a summed logprob and the answer's token count."""
    n = np.asarray(num_tokens, dtype=float)
    if np.any(n <= 0):
        raise LlmgenError("length-normalised probability needs at least one answer token")
    return np.exp(np.asarray(logprob, dtype=float) / n)


def answer_probabilities(logprobs: Sequence[float], num_tokens: Sequence[int]) -> np.ndarray:
    """Per example P̃(answer|q) (forget/retain 'probability')."""
    return normalised_prob(np.asarray(logprobs), np.asarray(num_tokens))


def choice_probabilities(true_lp: Sequence[float], true_n: Sequence[int], pert_lp: Sequence[Sequence[float]],
                         pert_n: Sequence[Sequence[int]]) -> np.ndarray:
    """Per example P̃(true) / (P̃(true) + Σ_j P̃(perturbed_j)) (real authors / world facts)."""
    p_true = normalised_prob(np.asarray(true_lp), np.asarray(true_n))
    p_pert = np.array([normalised_prob(np.asarray(lp), np.asarray(n)).sum() for lp, n in zip(pert_lp, pert_n, strict=True)])
    return p_true / (p_true + p_pert)


def truth_ratios(para_lp: Sequence[float], para_n: Sequence[int], pert_lp: Sequence[Sequence[float]],
                 pert_n: Sequence[Sequence[int]]) -> np.ndarray:
    """Per example R = (Π_j P̃(perturbed_j))^(1/k) / P̃(paraphrased), computed in log space."""
    log_para = np.asarray(para_lp, dtype=float) / np.asarray(para_n, dtype=float)
    log_pert = np.array([np.mean(np.asarray(lp, dtype=float) / np.asarray(n, dtype=float))
                         for lp, n in zip(pert_lp, pert_n, strict=True)])
    return np.exp(log_pert - log_para)


def truth_ratio_score(ratios: Sequence[float], forget: bool) -> float:
    """Aggregate truth ratio: forget → mean(min(R, 1/R)); retain/utility sets → mean(max(0, 1 − R))."""
    r = np.asarray(ratios, dtype=float)
    if r.size == 0:
        raise LlmgenError("truth ratio of an empty set")
    if forget:
        return float(np.mean(np.minimum(r, 1.0 / r)))
    return float(np.mean(np.maximum(0.0, 1.0 - r)))


def rouge_l_recall(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    """ROUGE-L recall of each prediction against its reference (rouge-score, stemming on)."""
    from rouge_score import rouge_scorer

    if len(predictions) != len(references):
        raise LlmgenError(f"{len(predictions)} predictions for {len(references)} references")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return [scorer.score(ref, pred)["rougeL"].recall for pred, ref in zip(predictions, references, strict=True)]


def forget_quality(unlearned_ratios: Sequence[float], retain_ratios: Sequence[float]) -> float:
    """KS-test p-value between forget-set truth ratios of the evaluated and the retain-only model.

    TOFU feeds 1/R to the test; the KS statistic is invariant to a monotone map of both samples,
    so R gives the same p-value."""
    from scipy.stats import ks_2samp

    if len(unlearned_ratios) == 0 or len(retain_ratios) == 0:
        raise LlmgenError("forget quality needs truth ratios from both models")
    return float(ks_2samp(np.asarray(unlearned_ratios), np.asarray(retain_ratios)).pvalue)


def harmonic_mean(values: Sequence[float]) -> float:
    """Harmonic mean; 0 if any value is 0 (as scipy's hmean), error on negatives."""
    v = np.asarray(values, dtype=float)
    if v.size == 0 or np.any(v < 0) or np.any(np.isnan(v)):
        raise LlmgenError(f"harmonic mean needs non-negative values, got {v.tolist()}")
    if np.any(v == 0):
        return 0.0
    return float(v.size / np.sum(1.0 / v))


def model_utility(metrics: Mapping[str, Mapping[str, float]]) -> float:
    """Harmonic mean of the 9 retain / real-authors / world-facts × prob / ROUGE-L / truth-ratio values."""
    values = []
    for split in UTILITY_SPLITS:
        for m in UTILITY_METRICS:
            if split not in metrics or m not in metrics[split]:
                raise LlmgenError(f"model utility needs {split}.{m}")
            values.append(metrics[split][m])
    return harmonic_mean(values)


# --- one row, and the corpus aggregates ----------------------------------------------------------


def example_metrics(role: str, answer: tuple[float, int], base: tuple[float, int],
                    perturbed: Sequence[tuple[float, int]], generation: str | None, reference: str) -> dict[str, float]:
    """One row's ``prob``, ``truth_ratio`` and (with a generation) ``rougeL`` from its (summed
    logprob, token count) scores: the answer, the truth ratio's base answer and the perturbed
    answers. ``role`` picks the probability: P̃(answer) on forget/retain, P̃(answer) relative to
    the perturbed answers on the utility sets."""
    pert_lp, pert_n = [[lp for lp, _ in perturbed]], [[n for _, n in perturbed]]
    if role in TRUE_VS_PERTURBED:
        prob = choice_probabilities([answer[0]], [answer[1]], pert_lp, pert_n)[0]
    else:
        prob = answer_probabilities([answer[0]], [answer[1]])[0]
    out = {"prob": float(prob), "truth_ratio": float(truth_ratios([base[0]], [base[1]], pert_lp, pert_n)[0])}
    if generation is not None:
        out["rougeL"] = rouge_l_recall([generation], [reference])[0]
    return out


def summarize(per_set: Mapping[str, Mapping[str, Sequence[float]]],
              retain_ratios: Sequence[float] | None = None) -> dict[str, float]:
    """TOFU's aggregates from per-example values by set (``{"forget": {"prob": [...], ...}}``):
    ``<set>.truth_ratio`` (:func:`truth_ratio_score`), ``<set>.<metric>`` the mean of every other
    per-row metric a task reports (``prob``, ``rougeL`` and any a task adds: none is dropped),
    ``forget_quality`` (with ``retain_ratios`` and a forget set) and ``model_utility`` (with the
    three utility sets). Counts are not metrics: the caller reports them apart."""
    by_set: dict[str, dict[str, float]] = {}
    for role, values in per_set.items():
        if not values.get("prob"):
            raise LlmgenError(f"TOFU {role} set is empty")
        by_set[role] = {m: truth_ratio_score(v, forget=role == "forget") if m == "truth_ratio" else float(np.mean(v))
                        for m, v in values.items() if len(v)}
    flat: dict[str, float] = {}
    if retain_ratios is not None and "forget" in per_set:
        flat["forget_quality"] = forget_quality(per_set["forget"]["truth_ratio"], retain_ratios)
    if all(s in by_set for s in UTILITY_SPLITS):
        flat["model_utility"] = model_utility(by_set)
    for role, vals in by_set.items():
        order = [m for m in UTILITY_METRICS if m in vals] + sorted(m for m in vals if m not in UTILITY_METRICS)
        flat.update({f"{role}.{m}": vals[m] for m in order})
    return flat

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

The small functions below are pure; :func:`evaluate_tofu` scores a model through any
``llmgen.backends.Backend`` (``loglikelihood`` + greedy ``generate``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmgen.errors import LlmgenError
from llmgen.tasks.tofu import BASE_ANSWER_KEY, QA_PROMPT_TEMPLATE

UTILITY_SPLITS = ("retain", "real_authors", "world_facts")
UTILITY_METRICS = ("prob", "rougeL", "truth_ratio")
MAX_NEW_TOKENS = 200
"""TOFU's generation budget (``generation.max_length: 200`` in its eval configs; the reference
counts the prompt in it, llmgen gives the answer all 200 tokens)."""


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


# --- retain logs ----------------------------------------------------------------------------------


def save_retain_logs(path: str | os.PathLike, evaluation: Mapping[str, Any], meta: Mapping[str, Any] | None = None) -> Path:
    """Save the forget-set truth ratios of a retain-only model, for forget quality later."""
    from llmgen.io import atomic_write_json

    ratios = evaluation["forget"]["per_example"]["truth_ratio"]
    return atomic_write_json(path, {"forget_truth_ratios": list(ratios), "n": len(ratios), **(meta or {})})


def load_retain_logs(path: str | os.PathLike | None) -> list[float]:
    """Forget-set truth ratios of the retain-only model; a clear error when missing."""
    from llmgen.io import read_json

    hint = "produce them first with `llmgen npo-unlearning --stage retain-logs --retain-logs PATH` (a model fine-tuned on the retain split only)"
    if path is None:
        raise LlmgenError(f"forget quality needs retain-model logs (--retain-logs); {hint}")
    if not Path(path).is_file():
        raise LlmgenError(f"retain-model logs not found: {path}; {hint}")
    data = read_json(path)
    ratios = data.get("forget_truth_ratios") if isinstance(data, dict) else None
    if not isinstance(ratios, list) or not ratios:
        raise LlmgenError(f"retain-model logs {path} have no 'forget_truth_ratios' list")
    return [float(r) for r in ratios]


# --- scoring through a backend --------------------------------------------------------------------


@dataclass(frozen=True)
class PromptFormat:
    """How a question becomes a prompt. The default is TOFU's Phi-style "Question: q\\nAnswer: a"."""

    template: str = QA_PROMPT_TEMPLATE

    def prompt(self, question: str) -> str:
        return self.template.format(question=question)


CHAT_TEMPLATE = "chat"
"""A ``prompt_template`` value meaning "the model's own chat format" (TOFU prompts chat models such
as Llama-2-chat in their chat format and base models with ``Question: ...\nAnswer:``)."""


def resolve_prompt_template(template: str, tokenizer) -> str:
    """``template`` unchanged, or for ``"chat"`` the tokenizer's chat template rendered with the
    question as the single user turn (the model's default system prompt included) and the
    assistant turn opened. Braces in the rendered text are escaped for ``str.format``."""
    if template != CHAT_TEMPLATE:
        return template
    if not getattr(tokenizer, "chat_template", None):
        raise LlmgenError("prompt template 'chat' needs a tokenizer with a chat template; this model has none")
    sentinel = "\x00QUESTION\x00"
    text = tokenizer.apply_chat_template([{"role": "user", "content": sentinel}], tokenize=False,
                                         add_generation_prompt=True)
    return text.replace("{", "{{").replace("}", "}}").replace(sentinel, "{question}")


def answer_tokens(tokenizer, prompt: str, answer: str) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids + EOS): the tokens TOFU scores for one answer."""
    from llmgen.backends.base import encode_pair

    if tokenizer.eos_token_id is None:
        raise LlmgenError("TOFU scores answers with their EOS token; this tokenizer has none")
    ctx, cont = encode_pair(tokenizer, prompt, answer)
    return ctx, [*cont, tokenizer.eos_token_id]


def _score(backend, prompts: Sequence[str], answers: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    tok = backend.tokenizer
    res = backend.loglikelihood_tokens([answer_tokens(tok, p, a) for p, a in zip(prompts, answers, strict=True)])
    return np.array([r.logprob for r in res]), np.array([r.num_tokens for r in res])


def generation_sampling(max_new_tokens: int = MAX_NEW_TOKENS):
    """Greedy decoding that stops at EOS only (TOFU's ``model.generate(do_sample=False)``)."""
    from llmgen.backends.base import SamplingConfig

    if max_new_tokens < 1:
        raise LlmgenError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    return SamplingConfig(n=1, temperature=0.0, max_tokens=max_new_tokens, stop=())


def evaluate_split(backend, rows: Sequence[dict], role: str, fmt: PromptFormat = PromptFormat(),
                   max_new_tokens: int = MAX_NEW_TOKENS, generate: bool = True) -> dict[str, Any]:
    """Probability, truth ratio and ROUGE-L recall of one evaluation set (``role`` in forget,
    retain, real_authors, world_facts), with per-example values and generations."""
    if not rows:
        raise LlmgenError(f"TOFU {role} set is empty")
    if role not in BASE_ANSWER_KEY:
        raise LlmgenError(f"unknown TOFU evaluation set {role!r} (known: {', '.join(BASE_ANSWER_KEY)})")
    prompts = [fmt.prompt(r["question"]) for r in rows]
    ans_lp, ans_n = _score(backend, prompts, [r["answer"] for r in rows])
    para_lp, para_n = _score(backend, prompts, [r[BASE_ANSWER_KEY[role]] for r in rows])
    flat = [(i, p) for i, r in enumerate(rows) for p in r["perturbed_answer"]]
    pert_lp_flat, pert_n_flat = _score(backend, [prompts[i] for i, _ in flat], [p for _, p in flat])
    pert_lp: list[list[float]] = [[] for _ in rows]
    pert_n: list[list[int]] = [[] for _ in rows]
    for (i, _), lp, n in zip(flat, pert_lp_flat, pert_n_flat, strict=True):
        pert_lp[i].append(lp)
        pert_n[i].append(n)
    if role in ("forget", "retain"):
        prob = answer_probabilities(ans_lp, ans_n)
    else:
        prob = choice_probabilities(ans_lp, ans_n, pert_lp, pert_n)
    tr = truth_ratios(para_lp, para_n, pert_lp, pert_n)
    out: dict[str, Any] = {"prob": float(np.mean(prob)), "truth_ratio": truth_ratio_score(tr, forget=role == "forget"),
                           "per_example": {"prob": prob.tolist(), "truth_ratio": tr.tolist()}}
    if generate:
        gens = [c[0].text.strip() for c in backend.generate([p.rstrip(" ") for p in prompts],
                                                            generation_sampling(max_new_tokens))]
        rouge = rouge_l_recall(gens, [r["answer"] for r in rows])
        out["rougeL"] = float(np.mean(rouge))
        out["per_example"]["rougeL"] = rouge
        out["generations"] = gens
    return out


def evaluate_tofu(backend, sets: Mapping[str, Sequence[dict]], retain_ratios: Sequence[float] | None = None,
                  fmt: PromptFormat = PromptFormat(), max_new_tokens: int = MAX_NEW_TOKENS) -> dict[str, Any]:
    """All TOFU metrics for the given sets (keys from forget, retain, real_authors, world_facts).

    ``forget_quality`` is present when ``retain_ratios`` (from :func:`load_retain_logs`) and a forget
    set are given; ``model_utility`` when all three utility sets are.
    """
    result: dict[str, Any] = {role: evaluate_split(backend, rows, role, fmt, max_new_tokens) for role, rows in sets.items()}
    if retain_ratios is not None and "forget" in result:
        result["forget_quality"] = forget_quality(result["forget"]["per_example"]["truth_ratio"], retain_ratios)
    if all(s in result for s in UTILITY_SPLITS):
        result["model_utility"] = model_utility(result)
    return result


def tofu_eval(backend, sets: Mapping[str, Sequence[dict]], retain_logs: str | os.PathLike | None = None,
              limit: int | None = None, ds_size: int | None = None, fmt: PromptFormat = PromptFormat(),
              max_new_tokens: int = MAX_NEW_TOKENS) -> dict[str, Any]:
    """One-call TOFU evaluation of a backend's model on already loaded sets (for ``llmgen eval
    --tasks tofu_<split>``): the first ``limit`` rows of each set, forget quality when
    ``retain_logs`` is given; returns ``{"summary": flat metrics, "result": full result}``.
    ``ds_size`` (the subset the sets were cut to, TOFU's 300) is only recorded in the summary."""
    if limit is not None and limit < 1:
        raise LlmgenError(f"limit must be >= 1, got {limit}")
    retain = load_retain_logs(retain_logs) if retain_logs is not None else None
    result = evaluate_tofu(backend, {k: list(v)[:limit] for k, v in sets.items()}, retain, fmt, max_new_tokens)
    flat = summary(result)
    if ds_size is not None:
        flat["ds_size"] = float(ds_size)
    return {"summary": flat, "result": result}


def summary(result: Mapping[str, Any]) -> dict[str, float]:
    """Flat ``{"forget_quality", "model_utility", "<split>.<metric>", "<split>.n"}`` view without
    per-example data (``n``: the rows evaluated, so a subset such as TOFU's ``ds_size`` shows)."""
    flat = {k: float(result[k]) for k in ("forget_quality", "model_utility") if k in result}
    for split, vals in result.items():
        if isinstance(vals, Mapping):
            for m in UTILITY_METRICS:
                if m in vals:
                    flat[f"{split}.{m}"] = float(vals[m])
            if "per_example" in vals:
                flat[f"{split}.n"] = float(len(vals["per_example"]["prob"]))
    return flat

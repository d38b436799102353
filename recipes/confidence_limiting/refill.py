"""The recipe-only parts of DCO training (Chen et al. 2025): batch refilling and DCO_a's success rates.

The loss and its weight F(N, p) live in ``llmgen.training.losses.dco`` (shared with
``llmgen train --loss dco``); these helpers are used only by the confidence-limiting recipe.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from llmgen.errors import LlmgenError
from llmgen.training.losses import model_inputs, token_logprobs
from llmgen.training.losses.dco import check_n, dco_weight


def estimate_success_rates(backend, prompts: Sequence[str], answers: Sequence[str], k: int,
                           temperature: float = 1.0, max_tokens: int = 256, stop: Sequence[str] = (),
                           seed: int | None = 0,
                           grader: Callable[[str, str], bool] | None = None) -> list[float]:
    """Per problem, the fraction of ``k`` sampled solutions whose final answer is correct (DCO_a's p)."""
    from llmgen.backends.base import SamplingConfig
    from llmgen.tasks.math_answers import grade

    if k < 1:
        raise LlmgenError(f"need k >= 1 samples to estimate a success rate, got {k}")
    if len(prompts) != len(answers):
        raise LlmgenError(f"{len(prompts)} prompts but {len(answers)} answers")
    grader = grader or grade
    outs = backend.generate(list(prompts), SamplingConfig(n=k, temperature=temperature,
                                                          max_tokens=max_tokens, stop=tuple(stop), seed=seed))
    return [sum(grader(c.text, a) for c in comps) / len(comps) for comps, a in zip(outs, answers, strict=True)]


@torch.no_grad()
def sequence_weights(model, batch: dict, n: float) -> torch.Tensor:
    """F(N, p̂) for each sequence of a batch under the current model (no gradient), for filtering."""
    lp, _ = token_logprobs(model, *model_inputs(batch))
    return dco_weight(lp.sum(-1), n)


def refill_keep(n: float, threshold: float = 0.1) -> Callable[[Any, dict], torch.Tensor]:
    """``keep_fn`` for ``llmgen.training.train``: keep examples whose F(N, p̂) under the current
    weights is above ``threshold``; the loop drops the others and refills the batch (reference:
    ``filter_samples.filter_fn_NCO``, run on every global batch)."""
    check_n(n)

    def keep(model, batch: dict) -> torch.Tensor:
        return sequence_weights(model, batch, n) > threshold

    return keep

"""Direct Coverage Optimization (Chen et al. 2025): fine-tuning for pass@N instead of pass@1.

The DCO objective for one example is ℓ = −log(1 − (1 − p̂)^N), with p̂ = exp(summed answer-token
logprob): the log-probability that *at least one* of N samples is the right answer. Its gradient is
the cross-entropy gradient times one number per sequence,

    F(N, p̂) = N (1 − p̂)^(N−1) p̂ / (1 − (1 − p̂)^N),

so we train with F-weighted cross-entropy, with F computed in float64 and detached. This never
differentiates through the unstable log, and N = 1 gives F = 1, i.e. plain cross-entropy. F falls
towards 0 once p̂ is large: examples the model already gets right often enough stop pushing its
confidence further, which is how DCO keeps pass@N at large N from collapsing. Examples whose F
is at or below a threshold (default 0.1) are dropped before the loss, as in the reference code:
``llmgen.recipes.confidence_limiting.refill.refill_keep`` lets the training loop score each batch
and refill it from the following examples.

The loss is, as in the reference (allanraventos/refine ``NCO.custom_loss_function1(...).mean()``),
the mean over the batch of F·NLL/|y| (``normalization="example_mean"``), every example that reaches
it kept and weighted by F, and that is the logged loss; ``"token_mean"`` (F-weighted NLL summed
over the batch, divided by its answer tokens: N = 1 equals the ``ce`` loss) and ``"sum"`` (summed
NLL per example, mean over examples: the exact gradient of the mean of ℓ) are options, and so is
dropping F <= ``threshold`` inside the loss (divided by the kept count, llmgen's former default).

DCO_a (for chain-of-thought answers, where p̂ over whole solutions is tiny and meaningless) uses
the same weight with p estimated as the fraction of k sampled solutions that reach the right answer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from llmgen.errors import LlmgenError
from llmgen.training.losses import LossState, model_inputs, register_loss, token_logprobs

SMALL_NP = 0.1  # below this N·p̂, F and ℓ come from a power series (the closed form cancels)
_SERIES_TERMS = 12


def check_n(n: float) -> float:
    """N must be a number >= 1 (pass@N with fewer than one sample means nothing)."""
    if isinstance(n, bool) or not isinstance(n, int | float) or not n >= 1 or math.isinf(n):
        raise LlmgenError(f"DCO needs N >= 1 (the number of samples at test time), got {n!r}")
    return float(n)


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 − exp(x)) for x <= 0, accurate at both ends (Mächler 2012)."""
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def _series_g(p: torch.Tensor, n: float) -> torch.Tensor:
    """g(p) = (1 − (1 − p)^N) / (N p) = Σ_j (−1)^(j+1) C(N−1, j−1) p^(j−1) / j, for small N·p."""
    term = torch.ones_like(p)
    total = torch.ones_like(p)
    for j in range(1, _SERIES_TERMS):
        term = term * (-p) * (n - j) / j
        total = total + term / (j + 1)
    return total


def _as_logp(logp: torch.Tensor | Sequence[float] | float) -> torch.Tensor:
    t = torch.as_tensor(logp).detach().to(torch.float64)
    if torch.any(t > 1e-4):  # float32 sums of exact zeros can round a hair above 0
        raise LlmgenError("sequence log-probabilities must be <= 0")
    return t.clamp(max=0.0)


def dco_weight(logp: torch.Tensor | Sequence[float] | float, n: float) -> torch.Tensor:
    """F(N, p̂) per sequence from summed logprobs ``logp`` (float64, detached, in [0, 1])."""
    n = check_n(n)
    s = _as_logp(logp)
    if n == 1.0:
        return torch.ones_like(s)
    p = torch.exp(s)
    log_q = _log1mexp(s)  # log(1 − p̂), exact even when p̂ is within 1e-16 of 1
    small = n * p < SMALL_NP
    # closed form: log F = log N + (N−1) log q + log p − log(1 − q^N)
    log_cover = _log1mexp((n * log_q).clamp(max=-1e-300))
    log_f_big = math.log(n) + (n - 1) * log_q + s - log_cover
    # series: 1 − q^N = N p g(p), so log F = (N−1) log q − log g(p); F → 1 as p̂ → 0
    log_f_small = (n - 1) * log_q - torch.log(_series_g(torch.where(small, p, 0.0), n))
    return torch.exp(torch.where(small, log_f_small, log_f_big)).clamp(0.0, 1.0)


def dco_objective(logp: torch.Tensor | Sequence[float] | float, n: float) -> torch.Tensor:
    """ℓ = −log(1 − (1 − p̂)^N) per sequence (float64, detached), stable for p̂ → 0 and p̂ → 1."""
    n = check_n(n)
    s = _as_logp(logp)
    if n == 1.0:
        return -s
    p = torch.exp(s)
    small = n * p < SMALL_NP
    big = -_log1mexp((n * _log1mexp(s)).clamp(max=-1e-300))
    tiny = -(math.log(n) + s + torch.log(_series_g(torch.where(small, p, 0.0), n)))
    return torch.where(small, tiny, big)


NORMALIZATIONS = ("example_mean", "token_mean", "sum")


def check_normalization(normalization: str) -> str:
    """One of :data:`NORMALIZATIONS` (see the module docstring for what each means)."""
    if normalization not in NORMALIZATIONS:
        raise LlmgenError(f"unknown DCO normalization {normalization!r} (use {', '.join(NORMALIZATIONS)})")
    return normalization


def dco_weighted_loss(seq_logp: torch.Tensor, num_tokens: torch.Tensor, weight: torch.Tensor,
                      objective: torch.Tensor, threshold: float | None, normalization: str
                      ) -> tuple[torch.Tensor, dict[str, Any]]:
    """F-weighted CE: the loss is Σ F·NLL / scale, its gradient F·∇CE (F detached).

    Every example that reaches the loss is kept, weighted by its F, and the sum is divided by the
    batch size, as the reference (``NCO.custom_loss_function1(...).mean()``; the refill, not the
    loss, drops F <= threshold). ``"example_mean"``: mean over the batch of F·NLL/|y| (the
    reference's value, logged as the loss); ``"sum"``: mean over the batch of F·NLL (gradient = mean
    ∇ℓ exactly); ``"token_mean"``: Σ F·NLL / the batch's answer tokens. ``threshold`` (None: keep
    all) is the former in-loss filter, an option: examples with F <= threshold are dropped and the
    sum is divided by the kept count (or the kept answer tokens). The objective ℓ is logged beside
    it as ``dco_objective`` (same scale).
    """
    check_normalization(normalization)
    keep = weight > threshold if threshold is not None else torch.ones_like(weight, dtype=torch.bool)
    w = torch.where(keep, weight, torch.zeros_like(weight)).to(seq_logp.dtype)
    per_token = normalization == "example_mean"
    lengths = num_tokens.clamp(min=1).to(seq_logp.dtype) if per_token else torch.ones_like(seq_logp)
    scale = (num_tokens * keep).sum() if normalization == "token_mean" else keep.sum()
    if scale.item() == 0:  # everything dropped: a zero loss that still backpropagates
        loss = (seq_logp * 0.0).sum()
        value = torch.zeros((), dtype=torch.float64)
    else:
        loss = (w * -seq_logp / lengths).sum() / scale
        value = (objective * keep / lengths.to(objective.dtype)).sum() / scale.to(objective.dtype)
    logs = {"dco": loss.detach(), "dco_objective": value.item(), "dco_weight": weight.mean().item(),
            "dco_dropped": 1.0 - keep.float().mean().item()}
    return loss, logs


def _loss_options(state: LossState) -> tuple[float, float | None, str]:
    n = check_n(state.arg("N", state.arg("n", 1)))
    threshold = state.arg("threshold", None)
    return n, None if threshold is None else float(threshold), check_normalization(
        str(state.arg("normalization", "example_mean")))


@register_loss("dco")
def dco_loss(model, batch: dict, state: LossState) -> tuple[torch.Tensor, dict[str, Any]]:
    """DCO(N) on answer tokens. Loss args: ``N`` (default 1 = CE), ``threshold`` (default None: keep
    every example, as the reference; a number drops F <= it inside the loss), ``normalization``
    (``example_mean``, ``token_mean`` or ``sum``)."""
    n, threshold, norm = _loss_options(state)
    lp, mask = token_logprobs(model, *model_inputs(batch))
    seq, ntok = lp.sum(-1), mask.sum(-1)
    weight = dco_weight(seq, n).to(seq.device)
    loss, logs = dco_weighted_loss(seq, ntok, weight, dco_objective(seq, n).to(seq.device), threshold, norm)
    logs["ce"] = (-lp.sum() / mask.sum().clamp(min=1)).detach()
    logs["p_hat"] = torch.exp(seq.detach()).mean().item()
    return loss, logs


@register_loss("dco_a")
def dco_a_loss(model, batch: dict, state: LossState) -> tuple[torch.Tensor, dict[str, Any]]:
    """DCO_a: CE weighted by F(N, p) with p = the example's sampled success rate.

    The batch carries ``success_rate`` ([B] floats in [0, 1]); build it with
    :func:`estimate_success_rates`. Loss args as for ``dco``.
    """
    if "success_rate" not in batch:
        raise LlmgenError("the dco_a loss needs a 'success_rate' column in the training data")
    n, threshold, norm = _loss_options(state)
    lp, mask = token_logprobs(model, *model_inputs(batch))
    seq, ntok = lp.sum(-1), mask.sum(-1)
    rate = torch.as_tensor(batch["success_rate"], dtype=torch.float64).clamp(0.0, 1.0)
    weight = success_rate_weight(rate, n).to(seq.device)
    # the reported value is F-weighted CE: ℓ itself is about whole-solution probabilities we don't have
    loss, logs = dco_weighted_loss(seq, ntok, weight, (weight * -seq.detach().double()).to(seq.device),
                                   threshold, norm)
    logs["ce"] = (-lp.sum() / mask.sum().clamp(min=1)).detach()
    return loss, logs


def success_rate_weight(rate: torch.Tensor | Sequence[float], n: float) -> torch.Tensor:
    """F(N, p) for success rates p in [0, 1] (p = 0 → 1: unsolved problems get full CE)."""
    rate = torch.as_tensor(rate, dtype=torch.float64)
    if torch.any((rate < 0) | (rate > 1)):
        raise LlmgenError("success rates must be in [0, 1]")
    return dco_weight(torch.log(rate), n)

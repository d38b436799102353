"""Unlearning losses: GA, GD, KL, NPO (+RT, +KL), IdkDPO and SimNPO.

The math is written as pure functions of log-probability tensors, so each can be checked by hand
on tiny tensors; thin wrappers register them in the training loss registry
(``llmgen.training.losses.LOSSES``), where ``TrainConfig.loss`` picks them by name.

Conventions (following the NPO paper, Zhang et al. 2024): a sequence's log-probability
``log π(y|x)`` is the *sum* over answer tokens (no length normalisation) except in SimNPO, whose
point is to normalise by length. Losses are means over the batch. The retain NLL used by ``*_rt``
is the same sequence-level quantity, so α weighs terms of comparable scale.

- GA:      L = E_f[log πθ(y|x)]                          (minimising it ascends the NLL)
- NPO:     L = (2/β)·E_f[log(1 + (πθ/πref)^β)] = −(2/β)·E_f[log σ(−β·log(πθ/πref))]
           ∇L = E_f[w·∇log πθ] with w = 2πθ^β/(πθ^β + πref^β) ∈ (0, 2): GA's gradient, damped
           once the model has moved away from the reference; L → GA + (2/β)·log 2 as β → 0.
- IdkDPO:  −(2/β)·E[log σ(β·((log πθ − log πref)(idk) − (log πθ − log πref)(forget)))]
- SimNPO:  −(2/β)·E_f[log σ(−(β/|y|)·log πθ(y|x) − δ)]  (no reference model)
- KL term: Σ_answer tokens KL(πref(·|prefix) ‖ πθ(·|prefix)) on retain data.

Plain ``npo`` / ``ga`` / ``simnpo`` / ``idkdpo`` have no retain term; ``*_rt`` add α·NLL(retain),
``*_kl`` add α·KL on retain. ``gd`` is GA + NLL(retain) under its paper name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from llmgen.errors import LlmgenError

# --- pure loss math -------------------------------------------------------------------------------


def check_beta(beta: float) -> float:
    """β must be a positive number: the losses divide by it and σ(−β·x) degenerates at 0."""
    try:
        b = float(beta)
    except (TypeError, ValueError):
        raise LlmgenError(f"beta must be a number, got {beta!r}") from None
    if not b > 0:
        raise LlmgenError(f"beta must be > 0, got {beta}")
    return b


def ga_loss(logp: torch.Tensor) -> torch.Tensor:
    """Gradient ascent: mean sequence log-probability of the forget answers (to be minimised)."""
    return logp.mean()


def nll_loss(logp: torch.Tensor) -> torch.Tensor:
    """Mean negative sequence log-likelihood (the retain / fine-tuning term)."""
    return -logp.mean()


def npo_loss(logp: torch.Tensor, ref_logp: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """NPO: −(2/β)·mean log σ(−β·(log πθ − log πref)) on sequence log-probabilities."""
    beta = check_beta(beta)
    return -(2.0 / beta) * F.logsigmoid(-beta * (logp - ref_logp)).mean()


def npo_weight(logp: torch.Tensor, ref_logp: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """The per-example factor 2πθ^β/(πθ^β + πref^β) = 2σ(β·(log πθ − log πref)) that turns GA's
    gradient into NPO's."""
    return 2.0 * torch.sigmoid(check_beta(beta) * (logp - ref_logp))


def dpo_loss(win_logp: torch.Tensor, win_ref: torch.Tensor, lose_logp: torch.Tensor, lose_ref: torch.Tensor,
             beta: float = 0.1) -> torch.Tensor:
    """DPO with NPO's 2/β scale: prefer the ``win`` answers (IdkDPO: "I don't know") to ``lose``."""
    beta = check_beta(beta)
    margin = (win_logp - win_ref) - (lose_logp - lose_ref)
    return -(2.0 / beta) * F.logsigmoid(beta * margin).mean()


def simnpo_loss(logp: torch.Tensor, num_tokens: torch.Tensor, beta: float = 2.5, delta: float = 0.0) -> torch.Tensor:
    """SimNPO (Fan et al. 2024): reference-free NPO on length-normalised log-probabilities with a
    margin δ: −(2/β)·mean log σ(−(β/|y|)·log πθ(y|x) − δ)."""
    beta = check_beta(beta)
    return -(2.0 / beta) * F.logsigmoid(-beta * logp / num_tokens.clamp(min=1).to(logp.dtype) - delta).mean()


def kl_ref_policy(logits: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Σ over masked positions of KL(πref(·) ‖ πθ(·)), mean over sequences. Shapes [B,T,V], [B,T]."""
    logq = logits.float().log_softmax(-1)
    logp = ref_logits.float().log_softmax(-1)
    kl = (logp.exp() * (logp - logq)).sum(-1)
    return (kl * mask.to(kl.dtype)).sum(-1).mean()


# --- registry wrappers ----------------------------------------------------------------------------

#: Methods available to the recipe and CLI, with the streams they read and whether they need the
#: reference model; "aligned" streams are paired row by row with the forget stream.
METHODS: dict[str, dict[str, Any]] = {
    "ga": {"streams": ("forget",), "reference": False},
    "gd": {"streams": ("forget", "retain"), "reference": False},
    "kl": {"streams": ("forget", "retain"), "reference": True},
    "npo": {"streams": ("forget",), "reference": True},
    "npo_rt": {"streams": ("forget", "retain"), "reference": True},
    "npo_kl": {"streams": ("forget", "retain"), "reference": True},
    "idkdpo": {"streams": ("forget", "idk"), "reference": True, "aligned": ("idk",)},
    "idkdpo_rt": {"streams": ("forget", "idk", "retain"), "reference": True, "aligned": ("idk",)},
    "simnpo": {"streams": ("forget",), "reference": False},
    "simnpo_rt": {"streams": ("forget", "retain"), "reference": False},
}

DEFAULT_ARGS: dict[str, dict[str, float]] = {
    "npo": {"beta": 0.1}, "npo_rt": {"beta": 0.1, "alpha": 1.0}, "npo_kl": {"beta": 0.1, "alpha": 1.0},
    "idkdpo": {"beta": 0.1}, "idkdpo_rt": {"beta": 0.1, "alpha": 1.0}, "simnpo": {"beta": 2.5, "delta": 0.0},
    "simnpo_rt": {"beta": 2.5, "delta": 0.0, "alpha": 1.0}, "gd": {"alpha": 1.0}, "kl": {"alpha": 1.0}, "ga": {},
}


def check_method(method: str, args: Mapping[str, Any] | None = None) -> dict[str, float]:
    """Validate a method name and its arguments before any training; returns the full arguments."""
    if method not in METHODS:
        raise LlmgenError(f"unknown unlearning method {method!r} (known: {', '.join(sorted(METHODS))})")
    given = {k: v for k, v in (args or {}).items() if v is not None}
    unknown = sorted(set(given) - set(DEFAULT_ARGS[method]))
    if unknown:
        known = ", ".join(sorted(DEFAULT_ARGS[method])) or "none"
        raise LlmgenError(f"method {method!r} takes no argument {unknown[0]!r} (its arguments: {known})")
    merged = {**DEFAULT_ARGS[method], **given}
    if "beta" in DEFAULT_ARGS[method]:
        merged["beta"] = check_beta(merged["beta"])
    if "alpha" in merged and float(merged["alpha"]) < 0:
        raise LlmgenError(f"alpha must be >= 0, got {merged['alpha']}")
    return {k: float(v) for k, v in merged.items()}


def _register() -> None:
    from llmgen.training.losses import IGNORE_INDEX, LOSSES, model_inputs, register_loss, sequence_logprobs

    def seq(model, part):
        return sequence_logprobs(model, *model_inputs(part))

    def retain_term(model, batch, state, kind: str) -> tuple[torch.Tensor, dict[str, Any]]:
        alpha = float(state.arg("alpha", 1.0))
        part = batch["retain"]
        if kind == "nll":
            lp, _ = seq(model, part)
            term = nll_loss(lp)
            return alpha * term, {"retain_nll": term.detach()}
        input_ids, attention_mask, labels = model_inputs(part)
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[:, :-1]
        ref = state.ref_logits(part)[:, :-1]
        term = kl_ref_policy(logits, ref, labels[:, 1:] != IGNORE_INDEX)
        return alpha * term, {"retain_kl": term.detach()}

    def make(method: str, forget: str, retain: str | None):
        spec = METHODS[method]

        def loss_fn(model, batch, state):
            args = check_method(method, state.args)
            logs: dict[str, Any] = {}
            lp, n = seq(model, batch["forget"])
            if forget == "ga":
                loss = ga_loss(lp)
            elif forget == "npo":
                ref_lp, _ = state.ref_sequence_logprobs(batch["forget"])
                loss = npo_loss(lp, ref_lp, args["beta"])
                logs["npo_weight"] = npo_weight(lp, ref_lp, args["beta"]).mean().detach()
            elif forget == "idkdpo":
                ref_lp, _ = state.ref_sequence_logprobs(batch["forget"])
                win, _ = seq(model, batch["idk"])
                win_ref, _ = state.ref_sequence_logprobs(batch["idk"])
                loss = dpo_loss(win, win_ref, lp, ref_lp, args["beta"])
            else:
                loss = simnpo_loss(lp, n, args["beta"], args.get("delta", 0.0))
            logs["forget_logprob"] = lp.mean().detach()
            logs["forget_loss"] = loss.detach()
            if retain is not None:
                extra, more = retain_term(model, batch, state, retain)
                loss = loss + extra
                logs.update(more)
            return loss, logs

        loss_fn.__name__ = f"{method}_loss"
        loss_fn.__doc__ = f"Unlearning loss {method!r} (see llmgen.unlearning)."
        if method not in LOSSES:
            register_loss(method, needs_reference=spec["reference"], streams=spec["streams"],
                          aligned=spec.get("aligned", ()))(loss_fn)

    for method, forget, retain in [("ga", "ga", None), ("gd", "ga", "nll"), ("kl", "ga", "kl"),
                                   ("npo", "npo", None), ("npo_rt", "npo", "nll"), ("npo_kl", "npo", "kl"),
                                   ("idkdpo", "idkdpo", None), ("idkdpo_rt", "idkdpo", "nll"),
                                   ("simnpo", "simnpo", None), ("simnpo_rt", "simnpo", "nll")]:
        make(method, forget, retain)


_register()

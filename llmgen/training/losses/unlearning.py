"""Unlearning losses: GA, GD, KL, NPO (+RT, +KL), IdkDPO and SimNPO, as open-unlearning computes them.

The math is written as pure functions of log-probability tensors, so each can be checked by hand
on tiny tensors; thin wrappers register them in the training loss registry
(``llmgen.training.losses.LOSSES``), where ``TrainConfig.loss`` picks them by name.

Reductions follow the reference code (locuslab/open-unlearning ``src/trainer/unlearn/*.py`` and
``src/trainer/utils.py``), because they set the relative strength of the terms:

- GA:      L = mean over the batch's answer tokens of log πθ (``-model(**forget).loss``);
           ``ga_reduction="sum"`` is the summed-sequence form E_f[log πθ(y|x)] (≈|y| times stronger).
- NPO:     L = −(2/β)·E_f[log σ(−β·(log πθ(y|x) − log πref(y|x)))] on *summed* sequence
           log-probabilities (``compute_dpo_loss`` with ``compute_batch_nll``);
           ∇L = E_f[w·∇log πθ] with w = 2σ(β·log(πθ/πref)) ∈ (0, 2); L → GA_sum + (2/β)·log 2 as β → 0.
- IdkDPO:  −(2/β)·E[log σ(β·((log πθ − log πref)(idk) − (log πθ − log πref)(forget)))] (summed).
- SimNPO:  −(2/β)·E_f[log σ(β·(NLL(y|x)/|y| − δ))] (no reference model; β 4.5, δ 0).
- Retain NLL (GD, ``*_rt``): the token-mean NLL of the retain batch (``model(**retain).loss``).
- Retain KL (``kl``, ``npo_kl``): ``compute_kl_divergence``: Σ over all B·T positions of
  KL(πref ‖ πθ) / (B·T) (``kl_div(..., reduction="batchmean")`` on flattened logits);
  ``kl_reduction="answer"`` is the answer-token form: Σ over answer tokens, mean over sequences.

Total loss: γ·forget + α·retain (``GradDiff``: γ 1, α 1; SimNPO's config: γ 0.125, α 1).
Plain ``npo`` / ``ga`` / ``simnpo`` / ``idkdpo`` have no retain term. ``gd`` is GA + NLL(retain).
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
    """Gradient ascent, summed form: mean sequence log-probability of the forget answers (to be
    minimised)."""
    return logp.mean()


def token_mean_logprob(token_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean log-probability over every scored token of the batch (shapes [B, T]): minus HF's
    causal-LM ``loss``, which the reference uses for GA (forget) and the retain NLL. Long answers
    weigh more than short ones, as in a token-level cross-entropy."""
    m = mask.to(token_logp.dtype)
    return (token_logp * m).sum() / m.sum().clamp(min=1)


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


def simnpo_loss(logp: torch.Tensor, num_tokens: torch.Tensor, beta: float = 4.5, delta: float = 0.0) -> torch.Tensor:
    """SimNPO (Fan et al. 2024): reference-free NPO on the length-normalised NLL with a margin δ
    inside the scale: −(2/β)·mean log σ(β·(−log πθ(y|x)/|y| − δ)) (open-unlearning ``SimNPO``)."""
    beta = check_beta(beta)
    nll_per_token = -logp / num_tokens.clamp(min=1).to(logp.dtype)
    return -(2.0 / beta) * F.logsigmoid(beta * (nll_per_token - delta)).mean()


def _kl_per_position(logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    logq = logits.float().log_softmax(-1)
    logp = ref_logits.float().log_softmax(-1)
    return (logp.exp() * (logp - logq)).sum(-1)


def kl_ref_policy(logits: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Answer-token form: Σ over masked positions of KL(πref(·) ‖ πθ(·)), mean over sequences.
    Shapes [B,T,V], [B,T]."""
    kl = _kl_per_position(logits, ref_logits)
    return (kl * mask.to(kl.dtype)).sum(-1).mean()


def kl_batchmean(logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """The reference form (open-unlearning ``compute_kl_divergence``): KL(πref ‖ πθ) summed over
    every one of the B·T positions (prompt and padding included) and divided by B·T."""
    kl = _kl_per_position(logits, ref_logits)
    return kl.sum() / kl.numel()


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

DEFAULT_ARGS: dict[str, dict[str, float | str]] = {
    "ga": {"gamma": 1.0, "ga_reduction": "mean"},
    "gd": {"gamma": 1.0, "alpha": 1.0, "ga_reduction": "mean"},
    "kl": {"gamma": 1.0, "alpha": 1.0, "ga_reduction": "mean", "kl_reduction": "batchmean"},
    "npo": {"beta": 0.1, "gamma": 1.0},
    "npo_rt": {"beta": 0.1, "gamma": 1.0, "alpha": 1.0},
    "npo_kl": {"beta": 0.1, "gamma": 1.0, "alpha": 1.0, "kl_reduction": "batchmean"},
    "idkdpo": {"beta": 0.1, "gamma": 1.0},
    "idkdpo_rt": {"beta": 0.1, "gamma": 1.0, "alpha": 1.0},
    "simnpo": {"beta": 4.5, "delta": 0.0, "gamma": 0.125},
    "simnpo_rt": {"beta": 4.5, "delta": 0.0, "gamma": 0.125, "alpha": 1.0},
}
"""Each method's arguments and defaults (open-unlearning's trainer configs: NPO β 0.1, SimNPO
β 4.5, δ 0, γ 0.125; α 1 and γ 1 elsewhere)."""

CHOICE_ARGS: dict[str, tuple[str, ...]] = {"ga_reduction": ("mean", "sum"), "kl_reduction": ("batchmean", "answer")}
"""Arguments that name a form rather than a number; the first value is the reference's."""


def check_method(method: str, args: Mapping[str, Any] | None = None) -> dict[str, float | str]:
    """Validate a method name and its arguments before any training; returns the full arguments."""
    if method not in METHODS:
        raise LlmgenError(f"unknown unlearning method {method!r} (known: {', '.join(sorted(METHODS))})")
    given = {k: v for k, v in (args or {}).items() if v is not None}
    unknown = sorted(set(given) - set(DEFAULT_ARGS[method]))
    if unknown:
        known = ", ".join(sorted(DEFAULT_ARGS[method])) or "none"
        raise LlmgenError(f"method {method!r} takes no argument {unknown[0]!r} (its arguments: {known})")
    merged = {**DEFAULT_ARGS[method], **given}
    out: dict[str, float | str] = {}
    for k, v in merged.items():
        if k in CHOICE_ARGS:
            if v not in CHOICE_ARGS[k]:
                raise LlmgenError(f"unknown {k} {v!r} (use {' or '.join(CHOICE_ARGS[k])})")
            out[k] = str(v)
        elif k == "beta":
            out[k] = check_beta(v)
        else:
            try:
                out[k] = float(v)
            except (TypeError, ValueError):
                raise LlmgenError(f"{k} must be a number, got {v!r}") from None
            if k in ("alpha", "gamma") and out[k] < 0:
                raise LlmgenError(f"{k} must be >= 0, got {v}")
    return out


def _register() -> None:
    from llmgen.training.losses import IGNORE_INDEX, LOSSES, model_inputs, register_loss, token_logprobs

    def tokens(model, part):
        return token_logprobs(model, *model_inputs(part))

    def retain_term(model, batch, state, kind: str, args) -> tuple[torch.Tensor, dict[str, Any]]:
        part = batch["retain"]
        if kind == "nll":
            term = -token_mean_logprob(*tokens(model, part))
            return args["alpha"] * term, {"retain_nll": term.detach()}
        input_ids, attention_mask, labels = model_inputs(part)
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        ref = state.ref_logits(part)
        if args["kl_reduction"] == "batchmean":
            term = kl_batchmean(logits, ref)
        else:
            term = kl_ref_policy(logits[:, :-1], ref[:, :-1], labels[:, 1:] != IGNORE_INDEX)
        return args["alpha"] * term, {"retain_kl": term.detach()}

    def make(method: str, forget: str, retain: str | None):
        spec = METHODS[method]

        def loss_fn(model, batch, state):
            args = check_method(method, state.args)
            logs: dict[str, Any] = {}
            tok_lp, mask = tokens(model, batch["forget"])
            lp, n = tok_lp.sum(-1), mask.sum(-1)
            if forget == "ga":
                loss = ga_loss(lp) if args["ga_reduction"] == "sum" else token_mean_logprob(tok_lp, mask)
            elif forget == "npo":
                ref_lp, _ = state.ref_sequence_logprobs(batch["forget"])
                loss = npo_loss(lp, ref_lp, args["beta"])
                logs["npo_weight"] = npo_weight(lp, ref_lp, args["beta"]).mean().detach()
            elif forget == "idkdpo":
                ref_lp, _ = state.ref_sequence_logprobs(batch["forget"])
                win = tokens(model, batch["idk"])[0].sum(-1)
                win_ref, _ = state.ref_sequence_logprobs(batch["idk"])
                loss = dpo_loss(win, win_ref, lp, ref_lp, args["beta"])
            else:
                loss = simnpo_loss(lp, n, args["beta"], args["delta"])
            logs["forget_logprob"] = lp.mean().detach()
            logs["forget_loss"] = loss.detach()
            loss = args["gamma"] * loss
            if retain is not None:
                extra, more = retain_term(model, batch, state, retain, args)
                loss = loss + extra
                logs.update(more)
            return loss, logs

        loss_fn.__name__ = f"{method}_loss"
        loss_fn.__doc__ = f"Unlearning loss {method!r} (see llmgen.training.losses.unlearning)."
        if method not in LOSSES:
            register_loss(method, needs_reference=spec["reference"], streams=spec["streams"],
                          aligned=spec.get("aligned", ()))(loss_fn)

    for method, forget, retain in [("ga", "ga", None), ("gd", "ga", "nll"), ("kl", "ga", "kl"),
                                   ("npo", "npo", None), ("npo_rt", "npo", "nll"), ("npo_kl", "npo", "kl"),
                                   ("idkdpo", "idkdpo", None), ("idkdpo_rt", "idkdpo", "nll"),
                                   ("simnpo", "simnpo", None), ("simnpo_rt", "simnpo", "nll")]:
        make(method, forget, retain)


_register()

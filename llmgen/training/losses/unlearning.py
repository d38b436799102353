"""Unlearning losses: GA, GD, KL, NPO (+RT, +KL), IdkDPO and SimNPO, as open-unlearning computes them.

This module holds the math, as pure functions of log-probability tensors (each checked by hand on
tiny tensors), the terms the methods combine, and the method registry (:func:`register_method`,
:data:`UNLEARNING_METHODS`). Each method is one small module beside this one with its own defaults,
as open-unlearning's ``src/trainer/unlearn/<method>.py`` + ``configs/trainer/<Method>.yaml``:
``ga.py``, ``gd.py``, ``kl.py``, ``npo.py`` (+ ``npo_kl``), ``npo_rt.py``, ``idkdpo.py`` (+ ``_rt``),
``simnpo.py`` (+ ``_rt``). A new method is one such module, in the package or in a plugin
(``llmgen --plugin my_method.py``); ``llmgen npo-unlearning`` runs any registered method.

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

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F

from llmgen.errors import LlmgenError
from llmgen.registry import Registry
from llmgen.training.losses import (
    IGNORE_INDEX,
    LossFn,
    LossState,
    get_loss,
    loss_aligned_streams,
    loss_needs_reference,
    loss_streams,
    model_inputs,
    register_loss,
    token_logprobs,
)

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


# --- the method registry --------------------------------------------------------------------------


@dataclass(frozen=True)
class UnlearningMethod:
    """One unlearning method: its loss (registered in ``LOSSES`` under the same name), its own
    arguments with their defaults (open-unlearning's ``configs/trainer/<Method>.yaml``
    ``method_args``), the data streams it reads and whether it needs the reference model.
    ``choices`` names the arguments that pick a form rather than a number (first value: the
    reference's). A method registered with ``register_loss`` alone has no declared arguments: its
    ``method_args`` pass through unchecked (``declared`` False)."""

    name: str
    defaults: Mapping[str, float | str]
    streams: tuple[str, ...]
    reference: bool
    aligned: tuple[str, ...] = ()
    choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    declared: bool = True


UNLEARNING_METHODS: Registry[UnlearningMethod] = Registry("unlearning method")

CHOICE_ARGS: dict[str, tuple[str, ...]] = {"ga_reduction": ("mean", "sum"), "kl_reduction": ("batchmean", "answer")}
"""The shipped methods' arguments that name a form rather than a number; the first value is the reference's."""


def register_method(name: str, defaults: Mapping[str, float | str], streams: tuple[str, ...] = ("forget",),
                    reference: bool = False, aligned: tuple[str, ...] = ()) -> Callable[[LossFn], LossFn]:
    """Register an unlearning method: ``@register_method("npo", {"beta": 0.1, "gamma": 1.0},
    reference=True)`` over ``fn(model, batch, state)``. The loss lands in the training loss registry
    (so ``llmgen train --loss NAME`` runs it too) and the method in :data:`UNLEARNING_METHODS`, which
    ``llmgen npo-unlearning`` reads; ``state.args`` holds the method's arguments, defaults filled in.
    Works the same from a plugin (``llmgen --plugin my_method.py``)."""

    def add(fn: LossFn) -> LossFn:
        method = UnlearningMethod(name, dict(defaults), tuple(streams), reference, tuple(aligned),
                                  {k: CHOICE_ARGS[k] for k in defaults if k in CHOICE_ARGS})

        def loss_fn(model, batch, state):
            return fn(model, batch, replace(state, args=method_args(method, state.args)))

        loss_fn.__name__, loss_fn.__doc__ = fn.__name__, fn.__doc__
        register_loss(name, needs_reference=reference, streams=streams, aligned=aligned)(loss_fn)
        UNLEARNING_METHODS.register(name, method)
        return fn

    return add


def get_method(name: str) -> UnlearningMethod:
    """The method registered as ``name``: the loss modules of this package are imported first (each
    registers its own methods), then plugins' methods are found as registered. A loss registered
    with ``register_loss`` alone is a method too when it reads a ``forget`` stream."""
    if name not in UNLEARNING_METHODS:
        try:
            fn = get_loss(name)  # imports every loss module of the package on first need
        except LlmgenError:
            fn = None
        if name in UNLEARNING_METHODS:
            return UNLEARNING_METHODS.get(name)
        streams = loss_streams(fn) if fn is not None else None
        if fn is None or not streams or streams[0] != "forget":
            known = ", ".join(UNLEARNING_METHODS) or "none"
            raise LlmgenError(f"unknown unlearning method {name!r} (known: {known}; a plugin can add one "
                              "with register_method or register_loss(streams=('forget', ...)))")
        return UnlearningMethod(name, {}, tuple(streams), loss_needs_reference(fn), loss_aligned_streams(fn),
                                declared=False)
    return UNLEARNING_METHODS.get(name)


def method_args(method: UnlearningMethod, args: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``method``'s arguments: its defaults with ``args`` over them, each checked (β > 0, α, γ ≥ 0,
    forms among their choices); an argument the method does not take is an error naming its own."""
    given = {k: v for k, v in (args or {}).items() if v is not None}
    if not method.declared:
        return given
    unknown = sorted(set(given) - set(method.defaults))
    if unknown:
        known = ", ".join(sorted(method.defaults)) or "none"
        raise LlmgenError(f"method {method.name!r} takes no argument {unknown[0]!r} (its arguments: {known})")
    out: dict[str, Any] = {}
    for k, v in {**method.defaults, **given}.items():
        if k in method.choices:
            if v not in method.choices[k]:
                raise LlmgenError(f"unknown {k} {v!r} (use {' or '.join(method.choices[k])})")
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


def check_method(name: str, args: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Validate a method name and its arguments before any training; returns the full arguments."""
    return method_args(get_method(name), args)


# --- the terms the shipped methods combine -----------------------------------------------------------


def forget_tokens(model, part) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probabilities and mask of one stream's batch (answer tokens only)."""
    return token_logprobs(model, *model_inputs(part))


def ga_term(model, batch, state) -> tuple[torch.Tensor, dict[str, Any]]:
    """Gradient ascent's forget term (open-unlearning ``GradAscent``: ``-model(**forget).loss``, the
    token mean; ``ga_reduction="sum"``: mean summed sequence log-probability)."""
    tok_lp, mask = forget_tokens(model, batch["forget"])
    lp = tok_lp.sum(-1)
    loss = ga_loss(lp) if state.args.get("ga_reduction", "mean") == "sum" else token_mean_logprob(tok_lp, mask)
    return loss, {"forget_logprob": lp.mean().detach()}


def npo_term(model, batch, state) -> tuple[torch.Tensor, dict[str, Any]]:
    """NPO's forget term (open-unlearning ``NPO.compute_loss``: ``compute_dpo_loss`` with the forget
    answers as the losing side only)."""
    lp = forget_tokens(model, batch["forget"])[0].sum(-1)
    ref_lp, _ = state.ref_sequence_logprobs(batch["forget"])
    beta = state.args["beta"]
    return npo_loss(lp, ref_lp, beta), {"forget_logprob": lp.mean().detach(),
                                        "npo_weight": npo_weight(lp, ref_lp, beta).mean().detach()}


def idkdpo_term(model, batch, state) -> tuple[torch.Tensor, dict[str, Any]]:
    """IdkDPO's forget term (open-unlearning ``DPO``): the "I don't know" answers win over the
    forget answers to the same questions."""
    lp = forget_tokens(model, batch["forget"])[0].sum(-1)
    ref_lp, _ = state.ref_sequence_logprobs(batch["forget"])
    win = forget_tokens(model, batch["idk"])[0].sum(-1)
    win_ref, _ = state.ref_sequence_logprobs(batch["idk"])
    return dpo_loss(win, win_ref, lp, ref_lp, state.args["beta"]), {"forget_logprob": lp.mean().detach()}


def simnpo_term(model, batch, state) -> tuple[torch.Tensor, dict[str, Any]]:
    """SimNPO's forget term (open-unlearning ``SimNPO.compute_loss``)."""
    tok_lp, mask = forget_tokens(model, batch["forget"])
    lp = tok_lp.sum(-1)
    loss = simnpo_loss(lp, mask.sum(-1), state.args["beta"], state.args["delta"])
    return loss, {"forget_logprob": lp.mean().detach()}


def retain_term(model, batch, state, kind: str) -> tuple[torch.Tensor, dict[str, Any]]:
    """The retain term before α: the token-mean NLL (``kind="nll"``, open-unlearning's
    ``retain_loss_type: NLL``) or the KL to the reference (``"kl"``, ``retain_loss_type: KL``)."""
    part = batch["retain"]
    if kind == "nll":
        term = -token_mean_logprob(*forget_tokens(model, part))
        return term, {"retain_nll": term.detach()}
    input_ids, attention_mask, labels = model_inputs(part)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    ref = state.ref_logits(part)
    if state.args.get("kl_reduction", "batchmean") == "batchmean":
        term = kl_batchmean(logits, ref)
    else:
        term = kl_ref_policy(logits[:, :-1], ref[:, :-1], labels[:, 1:] != IGNORE_INDEX)
    return term, {"retain_kl": term.detach()}


Term = Callable[[Any, dict, LossState], tuple[torch.Tensor, dict[str, Any]]]


def unlearning_loss(model, batch, state, forget: Term, retain: str | None = None) -> tuple[torch.Tensor, dict]:
    """γ·forget + α·retain (open-unlearning ``GradDiff.compute_loss``); no retain term when
    ``retain`` is None."""
    loss, logs = forget(model, batch, state)
    logs["forget_loss"] = loss.detach()
    loss = state.args.get("gamma", 1.0) * loss
    if retain is not None:
        term, more = retain_term(model, batch, state, retain)
        loss = loss + state.args["alpha"] * term
        logs.update(more)
    return loss, logs

"""Negative preference optimisation (Zhang et al. 2024; open-unlearning ``src/trainer/unlearn/npo.py``,
``configs/trainer/NPO.yaml``: β 0.1, γ 1). Plain ``npo`` has no retain term (the paper's NPO);
``npo_kl`` adds the KL retain term (the paper's NPO+KL); NPO+RT is ``npo_rt.py``."""

from __future__ import annotations

from llmgen.training.losses.unlearning import npo_term, register_method, unlearning_loss

DEFAULTS = {"beta": 0.1, "gamma": 1.0}


@register_method("npo", DEFAULTS, reference=True)
def npo(model, batch, state):
    """γ·NPO(forget)."""
    return unlearning_loss(model, batch, state, npo_term)


@register_method("npo_kl", {**DEFAULTS, "alpha": 1.0, "kl_reduction": "batchmean"}, streams=("forget", "retain"),
                 reference=True)
def npo_kl(model, batch, state):
    """γ·NPO(forget) + α·KL(πref ‖ πθ) on retain."""
    return unlearning_loss(model, batch, state, npo_term, retain="kl")

"""NPO+RT (Zhang et al. 2024; open-unlearning ``NPO`` with its ``configs/trainer/NPO.yaml`` defaults:
β 0.1, γ 1, α 1, ``retain_loss_type: NLL``): NPO on the forget answers plus the retain answers' NLL."""

from __future__ import annotations

from llmgen.training.losses.unlearning import npo_term, register_method, unlearning_loss

DEFAULTS = {"beta": 0.1, "gamma": 1.0, "alpha": 1.0}


@register_method("npo_rt", DEFAULTS, streams=("forget", "retain"), reference=True)
def npo_rt(model, batch, state):
    """γ·NPO(forget) + α·NLL(retain)."""
    return unlearning_loss(model, batch, state, npo_term, retain="nll")

"""Gradient difference (open-unlearning ``src/trainer/unlearn/grad_diff.py``, ``configs/trainer/GradDiff.yaml``:
γ 1, α 1, ``retain_loss_type: NLL``): gradient ascent on the forget answers, descent on the retain answers."""

from __future__ import annotations

from llmgen.training.losses.unlearning import ga_term, register_method, unlearning_loss

DEFAULTS = {"gamma": 1.0, "alpha": 1.0, "ga_reduction": "mean"}


@register_method("gd", DEFAULTS, streams=("forget", "retain"))
def gd(model, batch, state):
    """γ·GA(forget) + α·NLL(retain)."""
    return unlearning_loss(model, batch, state, ga_term, retain="nll")

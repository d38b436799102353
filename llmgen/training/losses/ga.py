"""Gradient ascent (open-unlearning ``src/trainer/unlearn/grad_ascent.py``, ``configs/trainer/GradAscent.yaml``):
minimise the forget answers' log-likelihood, the token mean over the batch (``-model(**forget).loss``)."""

from __future__ import annotations

from llmgen.training.losses.unlearning import ga_term, register_method, unlearning_loss

DEFAULTS = {"gamma": 1.0, "ga_reduction": "mean"}


@register_method("ga", DEFAULTS)
def ga(model, batch, state):
    """γ·GA(forget); ``ga_reduction="sum"`` ascends the summed sequence log-probability instead."""
    return unlearning_loss(model, batch, state, ga_term)

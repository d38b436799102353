"""GA with a KL retain term (open-unlearning ``GradDiff`` with ``retain_loss_type: KL``,
``src/trainer/utils.py``: ``compute_kl_divergence``): ascent on the forget answers while the retain
batch's next-token distributions stay close to the reference model's."""

from __future__ import annotations

from llmgen.training.losses.unlearning import ga_term, register_method, unlearning_loss

DEFAULTS = {"gamma": 1.0, "alpha": 1.0, "ga_reduction": "mean", "kl_reduction": "batchmean"}


@register_method("kl", DEFAULTS, streams=("forget", "retain"), reference=True)
def kl(model, batch, state):
    """γ·GA(forget) + α·KL(πref ‖ πθ) on retain."""
    return unlearning_loss(model, batch, state, ga_term, retain="kl")

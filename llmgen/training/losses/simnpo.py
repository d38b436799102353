"""SimNPO (Fan et al. 2024; open-unlearning ``src/trainer/unlearn/simnpo.py``, ``configs/trainer/SimNPO.yaml``:
δ 0, β 4.5, γ 0.125, α 1): reference-free NPO on the length-normalised NLL. ``simnpo_rt`` adds the
retain NLL (open-unlearning's SimNPO always has it); γ applies to plain ``simnpo`` too."""

from __future__ import annotations

from llmgen.training.losses.unlearning import register_method, simnpo_term, unlearning_loss

DEFAULTS = {"beta": 4.5, "delta": 0.0, "gamma": 0.125}


@register_method("simnpo", DEFAULTS)
def simnpo(model, batch, state):
    """γ·SimNPO(forget)."""
    return unlearning_loss(model, batch, state, simnpo_term)


@register_method("simnpo_rt", {**DEFAULTS, "alpha": 1.0}, streams=("forget", "retain"))
def simnpo_rt(model, batch, state):
    """γ·SimNPO(forget) + α·NLL(retain)."""
    return unlearning_loss(model, batch, state, simnpo_term, retain="nll")

"""IdkDPO (Maini et al. 2024; open-unlearning ``src/trainer/unlearn/dpo.py``, ``configs/trainer/DPO.yaml``:
β 0.1, γ 1, α 1): DPO preferring an "I don't know" answer (drawn at random from TOFU's
``idontknow.jsonl``, see ``llmgen.recipes.npo_unlearning.IdkRows``) to the forget answer of the
same question. ``idkdpo_rt`` adds the retain NLL, as open-unlearning's ``DPO`` does."""

from __future__ import annotations

from llmgen.training.losses.unlearning import idkdpo_term, register_method, unlearning_loss

DEFAULTS = {"beta": 0.1, "gamma": 1.0}


@register_method("idkdpo", DEFAULTS, streams=("forget", "idk"), reference=True, aligned=("idk",))
def idkdpo(model, batch, state):
    """γ·DPO(idk ≻ forget)."""
    return unlearning_loss(model, batch, state, idkdpo_term)


@register_method("idkdpo_rt", {**DEFAULTS, "alpha": 1.0}, streams=("forget", "idk", "retain"), reference=True,
                 aligned=("idk",))
def idkdpo_rt(model, batch, state):
    """γ·DPO(idk ≻ forget) + α·NLL(retain)."""
    return unlearning_loss(model, batch, state, idkdpo_term, retain="nll")

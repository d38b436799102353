"""Preparing a model for training: peft LoRA, gradient checkpointing, the reference model.

The reference model never doubles memory with LoRA: it is the same network with the adapters
switched off. Only full fine-tuning with a loss that asks for a reference pays for a frozen copy,
which may live in lower precision or on another device.
"""

from __future__ import annotations

import copy
from typing import Any

from llmgen.errors import LlmgenError
from llmgen.training.config import TrainConfig


def is_peft(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # peft is a dependency, but keep plain models usable without it
        return False
    return isinstance(model, PeftModel)


def add_lora(model: Any, config: TrainConfig) -> Any:
    """Wrap ``model`` with fresh LoRA adapters (rank ``lora_r``); a peft model is kept as it is."""
    if config.lora_r <= 0 or is_peft(model):
        return model
    from peft import LoraConfig, get_peft_model

    targets = config.lora_targets
    if isinstance(targets, str) and targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    lcfg = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=targets, task_type="CAUSAL_LM")
    try:
        return get_peft_model(model, lcfg)
    except ValueError as e:
        raise LlmgenError(f"cannot add LoRA adapters (targets {targets!r}): {str(e).splitlines()[0]}") from None


def enable_gradient_checkpointing(model: Any) -> None:
    """Turn on activation checkpointing so that LoRA adapters still receive gradients.

    With frozen embeddings the checkpointed blocks' inputs do not require grad, and reentrant
    checkpointing would then silently drop the adapters' gradients. ``enable_input_require_grads``
    makes the embedding output require grad; non-reentrant checkpointing is used as well.
    """
    base = model.get_base_model() if is_peft(model) else model
    if not getattr(base, "supports_gradient_checkpointing", False):
        raise LlmgenError(f"{type(base).__name__} does not support gradient checkpointing")
    base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if is_peft(model) or not all(p.requires_grad for p in base.get_input_embeddings().parameters()):
        base.enable_input_require_grads()


def frozen_copy(model: Any, dtype: str | None = None, device: str | None = None) -> Any:
    """A frozen, eval-mode deep copy of the initial weights (the full-fine-tuning reference)."""
    from llmgen.models import torch_dtype

    ref = copy.deepcopy(model)
    if dtype is not None:
        ref.to(torch_dtype(dtype))
    if device is not None:
        ref.to(device)
    ref.eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def trainable_parameters(model: Any) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def param_groups(model: Any, weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay on biases and norm weights (1-D tensors), as usual."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 else decay).append(p)
    if not decay and not no_decay:
        raise LlmgenError("the model has no trainable parameters")
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

"""Pluggable training losses: a registry, the state a loss sees, and log-probability helpers.

A loss is ``fn(model, batch, state) -> (scalar tensor, {name: float})`` (log values may also be
0-d tensors; the loop converts them only when it logs, so a loss need not force a device sync). Recipes add their own
(NPO, DCO, ...) with ``@register_loss("name", needs_reference=...)`` and select them by name in
``TrainConfig.loss``. The training loop never looks inside a loss: everything a loss may need
beyond the batch (step, epoch, its config arguments, the frozen reference model) is in
:class:`LossState`, so adding a loss never means touching the loop.

Batches are dicts: single-stream data gives ``{"input_ids", "attention_mask", "labels"}``;
paired streams give ``{"forget": {...}, "retain": {...}}`` (one such dict per stream).
Labels are ``-100`` on every position that must not be scored (prompt and padding).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from llmgen.errors import LlmgenError
from llmgen.registry import Registry

IGNORE_INDEX = -100

LossFn = Callable[[Any, dict, "LossState"], tuple[torch.Tensor, dict[str, float]]]

LOSSES: Registry[LossFn] = Registry("loss")


def register_loss(name: str, needs_reference: bool = False, streams: tuple[str, ...] | None = None,
                  aligned: tuple[str, ...] = ()):
    """Register a loss under ``name``.

    ``needs_reference=True`` makes the loop prepare a reference model (the same peft model with
    adapters disabled, or a frozen copy of the initial weights for full fine-tuning); losses
    that do not ask for one cost no extra memory. ``streams`` names the data streams the loss
    expects (e.g. ``("forget", "retain")``); ``None`` means one plain stream. The loop checks the
    data against it before training starts. Streams named in ``aligned`` are drawn in the first
    stream's order (the same example indices, so they must have its length): pairs such as a
    forget answer and an "I don't know" answer to the same question stay together; the other
    streams are shuffled on their own and cycle.
    """

    def add(fn: LossFn) -> LossFn:
        fn.needs_reference = needs_reference  # type: ignore[attr-defined]
        fn.streams = tuple(streams) if streams else None  # type: ignore[attr-defined]
        fn.aligned = tuple(aligned)  # type: ignore[attr-defined]
        LOSSES.register(name, fn)
        return fn

    return add


def loss_modules() -> list[str]:
    """The modules of this package (``unlearning``, ``dco``, ...): importing one registers its losses.
    Found by walking the package, so a new loss module needs no list here."""
    import pkgutil

    return [f"{__name__}.{info.name}" for info in pkgutil.iter_modules(__path__)]


def get_loss(name: str) -> LossFn:
    """The loss registered as ``name``; the loss modules of this package are imported on first
    need, so ``TrainConfig(loss="npo")`` works without importing them first."""
    import importlib

    for mod in loss_modules():
        if name in LOSSES:
            break
        importlib.import_module(mod)
    return LOSSES.get(name)


def is_main_process() -> bool:
    """Rank 0, or a single process (torchrun and ``accelerate launch`` set ``RANK``). For code
    that runs before or outside the training loop's accelerator."""
    import os

    return int(os.environ.get("RANK", "0")) == 0


def loss_needs_reference(fn: LossFn) -> bool:
    return bool(getattr(fn, "needs_reference", False))


def loss_streams(fn: LossFn) -> tuple[str, ...] | None:
    return getattr(fn, "streams", None)


def loss_aligned_streams(fn: LossFn) -> tuple[str, ...]:
    return getattr(fn, "aligned", ())


# --- log-probabilities ---------------------------------------------------------------------------


def model_inputs(part: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask, labels)`` from one stream's batch, with a clear error."""
    for key in ("input_ids", "attention_mask", "labels"):
        if key not in part:
            raise LlmgenError(f"batch has no {key!r} (keys: {', '.join(part)}); is this a paired batch?")
    return part["input_ids"], part["attention_mask"], part["labels"]


def token_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log p(label_t | tokens < t): ``([B, T-1] float32 logprobs, [B, T-1] bool mask)``.

    Position ``t`` of the result scores ``labels[:, t + 1]`` (the usual causal shift). Masked
    positions (label ``-100``) hold 0, so summing over the last axis gives sequence logprobs.
    Computed with ``cross_entropy`` on float32 logits, which avoids materialising a second
    [B, T, V] log-softmax tensor.
    """
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    # Shift the labels, not the logits: slicing [B, T, V] logits would copy them (as HF's loss does).
    target = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    nll = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), target.reshape(-1),
                          ignore_index=IGNORE_INDEX, reduction="none").view(target.shape)
    return -nll[:, :-1], target[:, :-1] != IGNORE_INDEX


def sequence_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probability of each sequence's scored tokens: ``([B] logprob, [B] token count)``."""
    lp, mask = token_logprobs(model, input_ids, attention_mask, labels)
    return lp.sum(-1), mask.sum(-1)


# --- what a loss sees ----------------------------------------------------------------------------


@dataclass
class LossState:
    """Everything a loss may need besides the batch.

    ``args`` holds ``TrainConfig.loss_args`` (e.g. ``{"beta": 0.1}``). The reference model is
    reached through :meth:`ref_sequence_logprobs` / :meth:`ref_token_logprobs`, which run under
    ``torch.no_grad()`` either on ``policy`` with its LoRA adapters disabled or on ``ref_model``,
    a frozen copy of the initial weights (possibly on another device or in lower precision).
    """

    step: int = 0
    epoch: int = 0
    args: dict[str, Any] = field(default_factory=dict)
    ref_model: Any = None
    policy: Any = None
    ref_mode: str | None = None  # "adapter" | "copy" | None
    num_processes: int = 1
    process_index: int = 0

    def arg(self, name: str, default: Any = None) -> Any:
        """A loss argument from the config, with a default."""
        return self.args.get(name, default)

    def _ref_call(self, fn, part: Mapping[str, torch.Tensor]):
        input_ids, attention_mask, labels = model_inputs(part)
        with torch.no_grad():
            if self.ref_mode == "adapter":
                with self.policy.disable_adapter():
                    a, b = fn(self.policy, input_ids, attention_mask, labels)
                return a.detach(), b
            if self.ref_mode == "copy":
                dev = next(self.ref_model.parameters()).device
                a, b = fn(self.ref_model, input_ids.to(dev), attention_mask.to(dev), labels.to(dev))
                return a.float().to(input_ids.device), b if b is None else b.to(input_ids.device)
        raise LlmgenError("this loss asks for a reference model but none was prepared; "
                          "register it with needs_reference=True")

    def ref_logits(self, part: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Reference model's full ``[B, T, V]`` logits (for KL terms), on the batch's device."""

        def logits(model, input_ids, attention_mask, _labels):
            out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
            return out, None

        lg, _ = self._ref_call(logits, part)
        return lg

    def ref_sequence_logprobs(self, part: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Reference model's ``([B] summed logprob, [B] token count)`` for one stream's batch."""
        return self._ref_call(sequence_logprobs, part)

    def ref_token_logprobs(self, part: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Reference model's ``([B, T-1] logprobs, [B, T-1] mask)`` for one stream's batch."""
        return self._ref_call(token_logprobs, part)


# --- shipped losses ------------------------------------------------------------------------------


@register_loss("ce")
def ce_loss(model, batch: dict, state: LossState) -> tuple[torch.Tensor, dict[str, float]]:
    """Causal-LM cross-entropy, mean over scored tokens (answer tokens for prompt/answer data)."""
    lp, mask = token_logprobs(model, *model_inputs(batch))
    n = mask.sum()
    loss = -lp.sum() / n.clamp(min=1)
    return loss, {"ce": loss.detach()}

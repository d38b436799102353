"""The backend interface shared by the HF and vLLM implementations.

Both backends tokenise (context, continuation) pairs with the same function, ``encode_pair``, so
their loglikelihoods are computed on identical token ids and can be compared directly.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from llmgen.errors import LlmgenError


@dataclass(frozen=True)
class SamplingConfig:
    """How to generate. ``temperature == 0`` is greedy, which allows only ``n == 1``."""

    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 64
    stop: tuple[str, ...] = ()
    seed: int | None = 0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise LlmgenError(f"number of samples must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise LlmgenError(f"temperature must be >= 0, got {self.temperature}")
        if self.temperature == 0 and self.n > 1:
            raise LlmgenError(f"greedy decoding (temperature 0) with n={self.n} samples gives n identical answers; set --temperature > 0")
        if not 0 < self.top_p <= 1:
            raise LlmgenError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise LlmgenError(f"max_tokens must be >= 1, got {self.max_tokens}")
        object.__setattr__(self, "stop", tuple(self.stop))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Completion:
    """One generated continuation. ``logprobs[i]`` is the raw model logprob of ``token_ids[i]``."""

    text: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # "stop" (EOS or stop string) or "length"


@dataclass
class LoglikelihoodResult:
    """Score of a continuation given a context: summed logprob over continuation tokens."""

    logprob: float
    num_tokens: int
    is_greedy: bool
    token_logprobs: list[float] = field(default_factory=list)


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of (context, continuation), tokenised together and split (lm-eval's convention).

    Trailing spaces of the context move to the continuation, because most BPE vocabularies attach
    a space to the following word. An empty context is replaced by the BOS (or EOS) token so that
    the first continuation token has something to be conditioned on.
    """
    n_spaces = len(context) - len(context.rstrip(" "))
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    if not continuation:
        raise LlmgenError("empty continuation: nothing to score")
    if context:
        whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
        ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
        if whole[: len(ctx)] == ctx and len(whole) > len(ctx):
            return ctx, whole[len(ctx):]
        cont = tokenizer(continuation, add_special_tokens=False)["input_ids"]
        return ctx, cont
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return [start], tokenizer(continuation, add_special_tokens=False)["input_ids"]


def apply_chat_template(tokenizer, prompt: str, system: str | None = None) -> str:
    """Wrap a user prompt in the model's chat template, ending where the assistant answers."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise LlmgenError("this model's tokenizer has no chat template; drop --apply-chat-template")
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def truncate_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut ``text`` at the earliest stop string (excluded, as vLLM does)."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class Backend(ABC):
    """Generation and scoring over one model (optionally with a LoRA adapter)."""

    name: str = "base"

    def __init__(self, model: str, adapter: str | None = None, dtype: str = "float32") -> None:
        from llmgen.models import model_fingerprint, resolve_model

        self.model_name = model
        self.model_path = resolve_model(model)
        self.adapter = adapter
        self.dtype = dtype
        self.fingerprint = model_fingerprint(self.model_path) + (f"+{model_fingerprint(adapter)}" if adapter else "")

    @property
    @abstractmethod
    def tokenizer(self): ...

    @abstractmethod
    def generate(self, prompts: Sequence[str], sampling: SamplingConfig) -> list[list[Completion]]:
        """Per prompt, ``sampling.n`` completions."""

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[LoglikelihoodResult]:
        """Per (context, continuation) pair, the summed logprob of the continuation."""
        return self.loglikelihood_tokens([encode_pair(self.tokenizer, c, x) for c, x in requests])

    @abstractmethod
    def loglikelihood_tokens(self, requests: Sequence[tuple[list[int], list[int]]]) -> list[LoglikelihoodResult]:
        """Like ``loglikelihood`` on already tokenised (context ids, continuation ids)."""

    def format_prompt(self, prompt: str, chat: bool = False, system: str | None = None) -> str:
        return apply_chat_template(self.tokenizer, prompt, system) if chat else prompt

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model_name, "model_path": self.model_path,
                "adapter": self.adapter, "dtype": self.dtype, "fingerprint": self.fingerprint}

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release the model (and for vLLM, the engine process)."""

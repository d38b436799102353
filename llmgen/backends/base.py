"""The backend interface shared by the HF and vLLM implementations.

Everything that must be the same on both backends lives here, once: prompt rendering (plain text or
chat messages through ``llmgen.prompts.chat``), left-truncation of prompts longer than the
context, per-request seeds, the tokenisation of (context, continuation) pairs (``encode_pair``), and
rolling-window loglikelihood. A backend implements only the model-facing parts:
``_generate_tokens`` (token ids in, completions out) and ``loglikelihood_tokens``.
"""

from __future__ import annotations

import hashlib
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from llmgen.errors import LlmgenError
from llmgen.prompts.chat import Prompt, apply_chat_template, render_prompt

log = logging.getLogger("llmgen")



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
    """One generated continuation. ``logprobs[i]`` is the raw model logprob of ``token_ids[i]``.

    ``truncated`` says the prompt was longer than ``max_length - max_tokens`` tokens and lost its
    beginning (left-truncation, as lm-eval does), so a score on it is not a score on the full prompt.
    """

    text: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # "stop" (EOS or stop string) or "length"
    truncated: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LoglikelihoodResult:
    """Score of a continuation given a context: summed logprob over continuation tokens."""

    logprob: float
    num_tokens: int
    is_greedy: bool
    token_logprobs: list[float] = field(default_factory=list)
    truncated: bool = False


@dataclass
class RollingResult:
    """Loglikelihood of a whole text (perplexity tasks): summed logprob and the three unit counts."""

    logprob: float
    num_tokens: int
    num_words: int
    num_bytes: int


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt ready for a backend: its token ids (after truncation) and its own sampling settings.

    ``seeds[j]`` seeds sample ``j``; it is derived from (sampling seed, rendered prompt) only, so a
    completion never depends on which other requests share its batch.
    """

    token_ids: list[int]
    sampling: SamplingConfig
    seeds: tuple[int, ...] | None
    truncated: bool


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
    return [prefix_token_id(tokenizer)], tokenizer(continuation, add_special_tokens=False)["input_ids"]


def prefix_token_id(tokenizer) -> int:
    """The token a text with no context is conditioned on: BOS, or EOS where there is no BOS."""
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


def request_seed(seed: int, prompt: str) -> int:
    """A 63-bit seed from (seed, prompt text); sample ``j`` of the request uses ``request_seed + j``.

    ``+ j`` is vLLM's own rule for the children of an ``n > 1`` request, so both backends seed
    sample ``j`` the same way.
    """
    digest = hashlib.sha256(f"{seed}\x00{prompt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 2  # leaves room for + j below 2**63


def per_request(sampling: SamplingConfig | Sequence[SamplingConfig], n_prompts: int) -> list[SamplingConfig]:
    """One ``SamplingConfig`` per prompt (a single one applies to all)."""
    if isinstance(sampling, SamplingConfig):
        return [sampling] * n_prompts
    out = list(sampling)
    if len(out) != n_prompts:
        raise LlmgenError(f"{len(out)} sampling settings for {n_prompts} prompts: give one, or one per prompt")
    return out


def truncate_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut ``text`` at the earliest stop string (excluded, as vLLM does)."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def rolling_windows(tokens: list[int], prefix: int, max_len: int) -> list[tuple[list[int], list[int]]]:
    """Disjoint (context, continuation) windows that score every token of ``tokens`` exactly once.

    lm-eval's ``get_rolling_token_windows(context_len=1)`` followed by ``make_disjoint_window``:
    the first window predicts the first ``max_len`` tokens from ``prefix``; each later one predicts
    the next ``max_len`` tokens conditioned on the tokens just before them, so that the whole
    window (context + continuation) is ``max_len + 1`` tokens and the model input ``max_len``.
    """
    if max_len < 1:
        raise LlmgenError(f"rolling windows need max_len >= 1, got {max_len}")
    windows: list[tuple[list[int], list[int]]] = []
    if not tokens:
        return windows
    first = min(max_len, len(tokens))
    windows.append(([prefix], tokens[:first]))
    done = first
    while done < len(tokens):
        n = min(len(tokens) - done, max_len)
        end = done + n
        ctx = tokens[max(0, end - max_len - 1) : end - 1]
        windows.append((ctx[: len(ctx) - (n - 1)], tokens[done:end]))
        done = end
    return windows


class Backend(ABC):
    """Generation and scoring over one model (optionally with a LoRA adapter)."""

    name: str = "base"
    batch_size: int = 16  # requests per call to the model; the request cache commits after each

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

    @property
    @abstractmethod
    def max_length(self) -> int:
        """The most tokens (prompt + generated) one sequence may hold."""

    @property
    def max_scored_length(self) -> int:
        """The most tokens (context + continuation) one scored sequence may hold: ``max_length - 1``.

        vLLM scores a sequence as a prompt that must leave room for one generated token; HF keeps
        the same limit so that both backends truncate, window and score the same tokens.
        """
        return self.max_length - 1

    # --- generation -----------------------------------------------------------------------------
    def generate(self, prompts: Sequence[Prompt], sampling: SamplingConfig | Sequence[SamplingConfig]
                 ) -> list[list[Completion]]:
        """Per prompt, ``sampling.n`` completions.

        A prompt is a string or a list of chat messages; ``sampling`` is one setting for all prompts
        or one per prompt. Each completion depends only on its prompt, its settings and its seed.
        """
        requests = self.prepare_generation(prompts, sampling)
        return self._generate_tokens(requests) if requests else []

    def prepare_generation(self, prompts: Sequence[Prompt], sampling: SamplingConfig | Sequence[SamplingConfig]
                           ) -> list[GenerationRequest]:
        """Render, tokenise, left-truncate and seed each prompt (the same on every backend)."""
        settings = per_request(sampling, len(prompts))
        tok, limit = self.tokenizer, self.max_length
        requests, n_truncated = [], 0
        for prompt, s in zip(prompts, settings, strict=True):
            text = render_prompt(tok, prompt)
            ids = tok(text, add_special_tokens=False)["input_ids"]
            room = limit - s.max_tokens
            if room < 1:
                raise LlmgenError(f"max_tokens {s.max_tokens} leaves no room for a prompt in this model's "
                                  f"{limit}-token context")
            truncated = len(ids) > room
            if truncated:
                ids, n_truncated = ids[-room:], n_truncated + 1
            seeds = None if s.seed is None else tuple(request_seed(s.seed, text) + j for j in range(s.n))
            requests.append(GenerationRequest(ids, s, seeds, truncated))
        if n_truncated:
            log.warning("%d of %d prompts are longer than the %d-token context minus max_tokens; "
                        "kept their last tokens (truncated=true in the samples)", n_truncated, len(prompts), limit)
        return requests

    @abstractmethod
    def _generate_tokens(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        """Per request, ``request.sampling.n`` completions of ``request.token_ids``."""

    # --- scoring --------------------------------------------------------------------------------
    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[LoglikelihoodResult]:
        """Per (context, continuation) pair, the summed logprob of the continuation.

        A pair longer than ``max_scored_length`` keeps the end of its context (lm-eval's
        left-truncation); the result says ``truncated``.
        """
        pairs = [encode_pair(self.tokenizer, c, x) for c, x in requests]
        kept, flags = [], []
        for ctx, cont in pairs:
            room = self.max_scored_length - len(cont)
            if room < 1:
                raise LlmgenError(f"a continuation of {len(cont)} tokens does not fit this model's "
                                  f"{self.max_scored_length}-token scoring context; score it with loglikelihood_rolling")
            flags.append(len(ctx) > room)
            kept.append((ctx[-room:], cont))
        if any(flags):
            log.warning("%d of %d scored pairs are longer than the %d-token scoring context; kept the end of "
                        "their context", sum(flags), len(pairs), self.max_scored_length)
        results = self.loglikelihood_tokens(kept)
        for r, t in zip(results, flags, strict=True):
            r.truncated = t
        return results

    @abstractmethod
    def loglikelihood_tokens(self, requests: Sequence[tuple[list[int], list[int]]]) -> list[LoglikelihoodResult]:
        """Like ``loglikelihood`` on already tokenised (context ids, continuation ids)."""

    def loglikelihood_rolling(self, texts: Sequence[str]) -> list[RollingResult]:
        """Per text, the summed logprob of all its tokens, scored in windows of the model's context.

        Windows are lm-eval's (``get_rolling_token_windows`` + ``make_disjoint_window``, one token of
        context), sized so that context + continuation fit ``max_scored_length``: every token is scored
        once, conditioned on as many preceding tokens as fit. Word and byte counts are lm-eval's
        (``re.split(r"\\s+")`` and UTF-8 bytes), for word and byte perplexity.
        """
        tok = self.tokenizer
        prefix = prefix_token_id(tok)
        windows, owner = [], []
        for i, text in enumerate(texts):
            ids = tok(text, add_special_tokens=False)["input_ids"]
            if not ids:
                raise LlmgenError(f"text {i} is empty: nothing to score")
            for w in rolling_windows(ids, prefix, self.max_scored_length - 1):
                windows.append(w)
                owner.append(i)
        scores = self.loglikelihood_tokens(windows)
        totals, counts = [0.0] * len(texts), [0] * len(texts)
        for i, r in zip(owner, scores, strict=True):
            totals[i] += r.logprob
            counts[i] += r.num_tokens
        return [RollingResult(totals[i], counts[i], len(re.split(r"\s+", t)), len(t.encode("utf-8")))
                for i, t in enumerate(texts)]

    # --- misc -----------------------------------------------------------------------------------
    def format_prompt(self, prompt: Prompt, chat: bool = False, system: str | None = None) -> str:
        if chat:
            return apply_chat_template(self.tokenizer, prompt, system)
        if not isinstance(prompt, str):
            raise LlmgenError("chat messages need the chat template (apply_chat_template)")
        return prompt

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model_name, "model_path": self.model_path,
                "adapter": self.adapter, "dtype": self.dtype, "fingerprint": self.fingerprint,
                "max_length": self.max_length}

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release the model (and for vLLM, the engine process)."""


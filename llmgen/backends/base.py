"""The backend interface shared by the HF and vLLM implementations.

Everything that must be the same on both backends lives here, once: prompt rendering (plain text or
chat messages through ``llmgen.prompts.chat``), left-truncation of prompts longer than the
context, per-request seeds, the tokenisation of (context, continuation) pairs (``encode_pair``), and
rolling-window loglikelihood. A backend implements only the model-facing parts:
``_generate_tokens`` (token ids in, completions out) and ``loglikelihood_tokens``.

Generation options beyond sampling (fixed length ignoring EOS, the full-distribution entropy of every
step, an n-gram block) are ``SamplingConfig`` fields; a backend lists the ones it can honour exactly in
``GENERATION_OPTIONS`` and refuses the others with one error line before generating.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import logging
import re
import shutil
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Union

from llmgen.errors import LlmgenError
from llmgen.models import check_adapter, check_dtype, check_remote_code
from llmgen.prompts.chat import Prompt, apply_chat_template, render_prompt
from llmgen.registry import Registry
from llmgen.training.modeling import is_peft

log = logging.getLogger("llmgen")

BACKENDS: Registry[type[Backend]] = Registry("backend")  # filled by @register_backend in each backend module
SECRET_ARGS = frozenset({"api_key"})  # never an argument: it would be written to config.json (env var instead)


def register_backend(name: str):
    """Class decorator: ``@register_backend("hf")`` makes ``--backend hf`` build this class.

    A backend is one module (in this package, found by walking it, or a ``--plugin`` file): the
    class says its name, its arguments (``__init__``'s, see ``Backend.accepted_args``), the task
    types it runs (``TASK_TYPES``) and how it scores a model held in memory (``from_model``)."""

    def add(cls: type[Backend]) -> type[Backend]:
        cls.name = name
        BACKENDS.register(name, cls)
        return cls

    return add


class NgramBlock:
    """Forbid any next token that would complete an n-gram of ``sequences`` (Hyperfitting's citation
    blocker: no 5-gram of the training data is copied).

    It travels inside ``SamplingConfig.block_ngrams``, so each request carries its own block. Its
    identity is the content hash of the n-gram set (``digest``): two blocks with the same n-grams are
    equal, and the request cache key holds ``n`` and that hash (``to_dict``), never the sequences.
    The context of a step is the last ``n - 1`` ids of prompt + continuation so far.
    """

    def __init__(self, sequences: Sequence[Sequence[int]], n: int = 5) -> None:
        from llmgen.evals.generation import ngram_set

        if n < 2:
            raise LlmgenError(f"an n-gram block needs n >= 2, got {n}")
        self.n = n
        grams = sorted(ngram_set(([int(t) for t in s] for s in sequences), n))
        self.digest = hashlib.sha256(f"{n}:{grams}".encode()).hexdigest()
        self.next_tokens: dict[tuple[int, ...], frozenset[int]] = {}
        for gram in grams:
            self.next_tokens[gram[:-1]] = self.next_tokens.get(gram[:-1], frozenset()) | {gram[-1]}

    def blocked(self, context: Sequence[int]) -> frozenset[int]:
        """Token ids that may not follow ``context``."""
        if len(context) < self.n - 1:
            return frozenset()
        return self.next_tokens.get(tuple(context[len(context) - self.n + 1:]), frozenset())

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "sha256": self.digest}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NgramBlock) and (self.n, self.digest) == (other.n, other.digest)

    def __hash__(self) -> int:
        return hash((self.n, self.digest))

    def __repr__(self) -> str:
        return f"NgramBlock(n={self.n}, sha256={self.digest[:12]}…, contexts={len(self.next_tokens)})"


@dataclass(frozen=True)
class SamplingConfig:
    """How to generate. ``temperature == 0`` is greedy, which allows only ``n == 1``.

    ``ignore_eos`` generates exactly ``max_tokens`` tokens (EOS is a token like any other; stop
    strings still stop). ``return_entropy`` adds the entropy (nats) of the model's full next-token
    distribution at every step to the completion (raw model, before temperature, top-p or a block).
    ``block_ngrams`` forbids tokens that would complete one of its n-grams. The three default to off
    and enter ``to_dict`` (and so the cache key) only when set, so other requests keep their keys.
    """

    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 64
    stop: tuple[str, ...] = ()
    seed: int | None = 0
    ignore_eos: bool = False
    return_entropy: bool = False
    block_ngrams: NgramBlock | None = None

    OPTIONS = ("ignore_eos", "return_entropy", "block_ngrams")  # off unless set; not every backend has them

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
        if self.block_ngrams is not None and not isinstance(self.block_ngrams, NgramBlock):
            raise LlmgenError(f"block_ngrams must be an NgramBlock, got {type(self.block_ngrams).__name__}")
        object.__setattr__(self, "stop", tuple(self.stop))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def options(self) -> set[str]:
        """The generation options of ``OPTIONS`` this setting turns on."""
        return {name for name in self.OPTIONS if getattr(self, name)}

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in self.OPTIONS}
        for name in self.options():
            value = getattr(self, name)
            out[name] = value.to_dict() if isinstance(value, NgramBlock) else value
        return out


@dataclass(frozen=True)
class TokenPrompt:
    """A prompt given as token ids: sent to the model as they are, never decoded and re-tokenised.

    For prompts cut from tokenised text (Hyperfitting's held-out prefixes), where decoding and
    encoding again need not give the same ids. Its per-request seed and cache key come from the ids.
    """

    ids: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "ids", tuple(int(t) for t in self.ids))
        if not self.ids:
            raise LlmgenError("a token prompt needs at least one token id")

    @property
    def seed_text(self) -> str:
        """The string ``request_seed`` hashes for this prompt (no text prompt starts with it)."""
        return "\x00token-ids:" + ",".join(map(str, self.ids))


GenPrompt = Union[Prompt, TokenPrompt]  # noqa: UP007 - a runtime alias, as Prompt


@dataclass
class Completion:
    """One generated continuation. ``logprobs[i]`` is the raw model logprob of ``token_ids[i]``;
    ``entropies[i]`` (with ``SamplingConfig.return_entropy``) the entropy of the step's distribution.

    ``truncated`` says the prompt was longer than ``max_length - max_tokens`` tokens and lost its
    beginning (left-truncation, as lm-eval does), so a score on it is not a score on the full prompt.
    """

    text: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # "stop" (EOS or stop string) or "length"
    truncated: bool = False
    entropies: list[float] | None = None

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


def model_dtype(model: Any) -> str:
    """A torch model's parameter dtype as a backend argument (``torch.bfloat16`` → ``"bfloat16"``)."""
    return str(getattr(model, "dtype", "float32")).removeprefix("torch.")


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
    TASK_TYPES: frozenset[str] | None = None  # the task output types it runs; None: all of them
    CHAT: bool = False  # prompts always go through a chat template (the server's): tasks send chat messages
    SHARDABLE: bool = True  # one instance per rank under torchrun (llmgen.sharding); vLLM parallelises itself
    LOCAL_WEIGHTS: bool = False  # loads the checkpoint in this process: ``check_model`` checks it first
    batch_size: int = 16  # requests per call to the model; the request cache commits after each
    GENERATION_OPTIONS: frozenset[str] = frozenset()  # the SamplingConfig.OPTIONS this backend honours exactly
    in_memory: bool = False  # a model object held by the caller (fingerprinted by hashing its weights)
    _fingerprint: str | None = None  # set on first use of ``fingerprint``

    def __init__(self, model: str, adapter: str | None = None, dtype: str = "float32") -> None:
        from llmgen.models import resolve_model

        self.model_name = model
        self.model_path = resolve_model(model)
        self.adapter = adapter
        self.dtype = dtype

    @property
    def fingerprint(self) -> str:
        """What identifies the model's weights in cache keys, computed on first use and kept.

        Lazy because only a persistent request cache needs it, and for an in-memory model it is a
        hash of every weight (about a second for SmolLM2). The value is a snapshot: a backend over
        a model whose weights change afterwards must be built again.
        """
        if self._fingerprint is None:
            self._fingerprint = self._compute_fingerprint()
        return self._fingerprint

    def _compute_fingerprint(self) -> str:
        from llmgen.models import model_fingerprint

        return model_fingerprint(self.model_path) + (f"+{model_fingerprint(self.adapter)}" if self.adapter else "")

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
    def generate(self, prompts: Sequence[GenPrompt], sampling: SamplingConfig | Sequence[SamplingConfig]
                 ) -> list[list[Completion]]:
        """Per prompt, ``sampling.n`` completions.

        A prompt is a string, a list of chat messages or a ``TokenPrompt``; ``sampling`` is one
        setting for all prompts or one per prompt. Each completion depends only on its prompt, its
        settings and its seed.
        """
        requests = self.prepare_generation(prompts, sampling)
        return self._generate_tokens(requests) if requests else []

    def check_options(self, settings: Sequence[SamplingConfig]) -> None:
        """One error line for a generation option this backend cannot honour exactly."""
        asked = set().union(*(s.options() for s in settings)) if settings else set()
        missing = sorted(asked - self.GENERATION_OPTIONS)
        if missing:
            raise LlmgenError(f"the {self.name} backend cannot generate with {', '.join(missing)} "
                              f"(the hf backend can)")

    def prepare_generation(self, prompts: Sequence[GenPrompt], sampling: SamplingConfig | Sequence[SamplingConfig]
                           ) -> list[GenerationRequest]:
        """Render, tokenise, left-truncate and seed each prompt (the same on every backend)."""
        settings = per_request(sampling, len(prompts))
        self.check_options(settings)
        tok, limit = self.tokenizer, self.max_length
        requests, n_truncated = [], 0
        for prompt, s in zip(prompts, settings, strict=True):
            if isinstance(prompt, TokenPrompt):
                text, ids = prompt.seed_text, list(prompt.ids)
            else:
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

    # --- the registry's questions -------------------------------------------------------------
    @classmethod
    def accepted_args(cls) -> set[str] | None:
        """Keyword arguments ``--model-args`` may give (``__init__``'s, less ``model``); None: any."""
        params = inspect.signature(cls.__init__).parameters
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return None
        return {n for n, p in params.items() if n not in ("self", "model")
                and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}

    @classmethod
    def check_task(cls, task_name: str, output_type: str) -> None:
        """One error line, before any request, for a task this backend cannot run."""
        if cls.TASK_TYPES is not None and output_type not in cls.TASK_TYPES:
            raise LlmgenError(f"the {cls.name} backend cannot run task {task_name!r}: it is a {output_type} task "
                              f"and this backend runs only {', '.join(sorted(cls.TASK_TYPES))} tasks "
                              f"(text out, no token logprobs); use --backend openai, vllm or hf")

    @classmethod
    def check_model(cls, model: str, model_args: Mapping[str, Any]) -> None:
        """One error line, before anything loads, for what this backend would refuse only while
        loading: a backend that loads the weights here (``LOCAL_WEIGHTS``) checks the dtype's name,
        the adapter folder and a model folder's custom code (run only with ``trust_remote_code``)."""
        if not cls.LOCAL_WEIGHTS:
            return
        check_dtype(model_args.get("dtype"), cls.name)
        check_adapter(model_args.get("adapter"))
        check_remote_code(model, bool(model_args.get("trust_remote_code")))

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, save_dir: str | Path, dtype: str | None = None,
                   label: str = "in-memory", **kwargs: Any) -> Backend:
        """This backend over a model a recipe holds in memory (a peft model is merged first).

        By default the weights are saved to ``save_dir`` and loaded from there (an engine reads a
        folder, so the folder is the model's name and ``label`` is unused); ``dtype`` defaults to
        the model's own. ``HFBackend`` overrides this to score the object itself."""
        folder = Path(save_dir)
        shutil.rmtree(folder, ignore_errors=True)  # engines are cached per path: never reuse stale weights
        target = copy.deepcopy(model).merge_and_unload() if is_peft(model) else model
        target.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
        return cls(str(folder), dtype=dtype or model_dtype(model), **kwargs)

    def request_prompt(self, prompt: GenPrompt) -> Any:
        """What a generation request sends and the request cache keys: a ``TokenPrompt`` as it is,
        text as it is, chat messages rendered by the local chat template."""
        return prompt if isinstance(prompt, TokenPrompt) else render_prompt(self.tokenizer, prompt)

    # --- misc -----------------------------------------------------------------------------------
    def format_prompt(self, prompt: Prompt, chat: bool = False, system: str | None = None) -> str:
        if chat:
            return apply_chat_template(self.tokenizer, prompt, system)
        if not isinstance(prompt, str):
            raise LlmgenError("chat messages need the chat template (apply_chat_template)")
        return prompt

    def describe(self) -> dict[str, Any]:
        """The backend's settings for results.json. An in-memory model's fingerprint is there only if
        a cache key needed it (hashing every weight just to describe the backend is not worth it)."""
        fp = self._fingerprint if self.in_memory else self.fingerprint
        return {"backend": self.name, "model": self.model_name, "model_path": self.model_path,
                "adapter": self.adapter, "dtype": self.dtype, "fingerprint": fp, "max_length": self.max_length}

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release the model (and for vLLM, the engine process)."""


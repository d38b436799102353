"""API models: any OpenAI-compatible chat or text endpoint, hosted or local (``vllm serve``).

* ``openai-chat`` (``/v1/chat/completions``): messages in, text out. A task's prompt goes as chat
  messages (its system prompt, few-shot demonstrations as user/assistant turns where the task asks
  for ``fewshot_as_multiturn``, else one user turn), and the model's own chat template applies on the
  server, so ``llmgen eval --backend openai-chat`` sends what ``--apply-chat-template`` renders locally.
* ``openai-completions`` (``/v1/completions`` with a text prompt): for servers that do not take
  token ids. Tokenisation (and so prompt length, truncation and where stop strings fall) is the
  server's; results.json says so (``tokenization: server``).

Both run generation tasks only (greedy, sampling, ``n`` samples for pass@k, a per-request seed
that vLLM and OpenAI honour): an API answers text, not the token logprobs a multiple-choice or
perplexity task needs, so such a task is refused in one line before any request (use ``--backend
openai`` for a server that takes token ids and echoes logprobs). No local tokenizer or weights are
needed: ``--model`` is the served model's name (``default``: the first model ``/v1/models`` lists), and the
request cache knows the server by that name, its ``/v1/models`` entry and the base URLs, never by the
API key. The HTTP side (concurrency, retries with backoff on 429/5xx, timeouts, checked answers)
is ``llmgen.backends.openai``'s. ``describe()`` adds the run's request and token counts and the
wall time spent waiting for the servers.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from threading import Lock
from typing import Any

from llmgen.backends.base import (
    Backend,
    Completion,
    GenerationRequest,
    GenPrompt,
    LoglikelihoodResult,
    SamplingConfig,
    TokenPrompt,
    per_request,
    register_backend,
    request_seed,
    truncate_at_stop,
)
from llmgen.backends.openai import (
    DEFAULT_TIMEOUT,
    ServerPool,
    api_key_from_env,
    choices_of,
    list_models,
    map_concurrent,
    parse_base_urls,
)
from llmgen.errors import LlmgenError

MAX_STOP = 4  # OpenAI's limit on stop strings; more are applied here, after the answer


class ServerTextBackend(Backend):
    """Text out of an OpenAI-compatible endpoint, with nothing local but the prompt."""

    TASK_TYPES = frozenset({"generate"})
    PATH = ""  # the endpoint, below the base URL
    TEXT_FIELD = ""  # where a choice holds its text

    def __init__(self, model: str = "default", base_url: str | Sequence[str] | None = None,
                 served_model: str | None = None, api_key_env: str | None = None, concurrency: int = 8,
                 max_retries: int = 6, backoff: float = 0.5, timeout: float = DEFAULT_TIMEOUT,
                 batch_size: int = 64) -> None:
        """``model`` (or ``served_model``) is the name the server knows the model by; ``default``
        takes the first one ``/v1/models`` lists. The API key is ``$api_key_env`` (default
        ``$OPENAI_API_KEY``; none for a local server). ``batch_size`` requests go out per call
        from the request cache (committed after each)."""
        urls = parse_base_urls(base_url, self.name)
        if concurrency < 1:
            raise LlmgenError(f"concurrency must be >= 1, got {concurrency}")
        self.model_name, self.model_path, self.adapter, self.dtype = model, None, None, None
        self.concurrency, self.batch_size = concurrency, batch_size
        self.pool = ServerPool(urls, api_key=api_key_from_env(api_key_env), max_retries=max_retries,
                               backoff=backoff, timeout=timeout)
        listed = list_models(self.pool, max_retries)
        wanted = served_model or (None if model == "default" else model)
        ids = [m["id"] for m in listed]
        if wanted is not None and wanted not in ids:
            raise LlmgenError(f"server {urls[0]} serves no model {wanted!r} (it lists: {', '.join(ids[:8])})")
        self.served_model = wanted or ids[0]
        self._entry = next(m for m in listed if m["id"] == self.served_model)
        self._lock = Lock()
        self.usage = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}
        self.wall_s = 0.0

    # --- what the registry and the runner ask ---------------------------------------------------
    @property
    def tokenizer(self) -> None:
        """None: the server tokenises (prompts are never rendered or cut here)."""
        return None

    @property
    def max_length(self) -> int | None:
        """The served model's context length where ``/v1/models`` lists it (vLLM does), else None."""
        value = self._entry.get("max_model_len")
        return int(value) if isinstance(value, int) else None

    def _compute_fingerprint(self) -> str:
        """The server's identity for cache keys: its model entry (less the time it was listed) and
        the base URLs. No weights are at hand to hash, and the API key never enters."""
        entry = {k: v for k, v in self._entry.items() if k != "created"}
        blob = json.dumps({"model": entry, "urls": self.pool.urls}, sort_keys=True, default=str)
        return "server-" + hashlib.sha256(blob.encode()).hexdigest()[:16]

    def request_prompt(self, prompt: GenPrompt) -> Any:
        if isinstance(prompt, TokenPrompt):
            raise LlmgenError(f"the {self.name} backend sends text, not token ids; use --backend openai for token prompts")
        return prompt

    def format_prompt(self, prompt, chat: bool = False, system: str | None = None):
        """The prompt as it is: the server renders it (a chat server through the model's template)."""
        if system:
            messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
            return [{"role": "system", "content": system}, *messages]
        return prompt

    # --- generation ----------------------------------------------------------------------------
    def generate(self, prompts: Sequence[GenPrompt], sampling: SamplingConfig | Sequence[SamplingConfig]
                 ) -> list[list[Completion]]:
        """One request per prompt with its ``n`` samples; sample seeds as every backend derives them
        (``request_seed`` of the prompt as sent), which vLLM and OpenAI servers honour."""
        settings = per_request(sampling, len(prompts))
        self.check_options(settings)
        items = [(self.request_prompt(p), s) for p, s in zip(prompts, settings, strict=True)]
        t0 = time.time()
        try:
            return map_concurrent(self._one, items, self.concurrency)
        finally:
            with self._lock:
                self.wall_s += time.time() - t0

    def _one(self, item: tuple[Any, SamplingConfig]) -> list[Completion]:
        prompt, s = item
        body: dict[str, Any] = {"model": self.served_model, **self._prompt_body(prompt), "n": s.n,
                                "temperature": s.temperature, "top_p": s.top_p, "max_tokens": s.max_tokens}
        if s.stop:
            body["stop"] = list(s.stop[:MAX_STOP])
        if s.seed is not None:
            body["seed"] = request_seed(s.seed, json.dumps(prompt, ensure_ascii=False))
        answer = self.pool.request(self.PATH, body)
        choices = choices_of(answer, s.n, self.PATH, self.TEXT_FIELD)
        self._count(answer.get("usage"))
        out = []
        for c in choices:
            text, stopped = truncate_at_stop(self._text(c), s.stop)
            finish = "stop" if stopped or c.get("finish_reason") == "stop" else "length"
            out.append(Completion(text=text, token_ids=[], logprobs=[], finish_reason=finish))
        return out

    def _count(self, usage: Any) -> None:
        with self._lock:
            self.usage["requests"] += 1
            if isinstance(usage, dict):
                for key in ("prompt_tokens", "completion_tokens"):
                    if isinstance(usage.get(key), int):
                        self.usage[key] += usage[key]

    def _prompt_body(self, prompt: Any) -> dict[str, Any]:
        raise NotImplementedError

    def _text(self, choice: dict[str, Any]) -> str:
        raise NotImplementedError

    def _generate_tokens(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        raise LlmgenError(f"the {self.name} backend generates from text, not token ids")

    def loglikelihood_tokens(self, requests: Sequence[tuple[list[int], list[int]]]) -> list[LoglikelihoodResult]:
        raise LlmgenError(f"the {self.name} backend cannot score continuations: the endpoint returns text, not "
                          f"prompt logprobs; use --backend openai (a server that takes token ids), vllm or hf")

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[LoglikelihoodResult]:
        return self.loglikelihood_tokens([])

    def loglikelihood_rolling(self, texts: Sequence[str]) -> list:
        return self.loglikelihood_tokens([])

    def describe(self) -> dict[str, Any]:
        """Settings, the server's identity, and this run's traffic (requests, tokens as the server
        counted them, seconds spent waiting for answers)."""
        return {"backend": self.name, "model": self.model_name, "served_model": self.served_model,
                "base_urls": self.pool.urls, "fingerprint": self.fingerprint, "max_length": self.max_length,
                "concurrency": self.concurrency, "tokenization": "server", **self.usage,
                "retries": self.pool.retries, "wall_s": round(self.wall_s, 2)}


@register_backend("openai-chat")
class OpenAIChatBackend(ServerTextBackend):
    """``/v1/chat/completions``: a task's prompt as chat messages, the chat template the server's."""

    CHAT = True
    PATH = "/chat/completions"
    TEXT_FIELD = "message.content"

    def _prompt_body(self, prompt: Any) -> dict[str, Any]:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]
        for m in messages:
            if set(m) != {"role", "content"} or not all(isinstance(v, str) for v in m.values()):
                raise LlmgenError(f"a chat message needs a 'role' and a text 'content', got {m!r}")
        return {"messages": messages}

    def _text(self, choice: dict[str, Any]) -> str:
        return choice["message"].get("content") or ""  # content null (a refusal) is an empty answer


@register_backend("openai-completions")
class OpenAICompletionsBackend(ServerTextBackend):
    """``/v1/completions`` with a text prompt (tokenised by the server)."""

    PATH = "/completions"
    TEXT_FIELD = "text"

    def _prompt_body(self, prompt: Any) -> dict[str, Any]:
        if not isinstance(prompt, str):
            raise LlmgenError(f"the {self.name} backend sends text prompts; chat messages need --backend openai-chat")
        return {"prompt": prompt}

    def _text(self, choice: dict[str, Any]) -> str:
        return choice["text"]

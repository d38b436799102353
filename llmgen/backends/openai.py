"""The OpenAI-compatible server backend: a fleet of ``vllm serve`` (or SGLang) servers over HTTP.

This is how an evaluation goes past one machine: start one server per GPU or node, pass all their
base URLs (``--base-url http://a:8000/v1,http://b:8000/v1``) and requests are spread over them.

* Tokenisation happens here, with the same tokenizer and ``encode_pair`` as the HF and vLLM
  backends, and prompts go to the server as token ids (vLLM and SGLang accept ``prompt: [ids]``),
  so the server scores exactly the tokens the other backends score.
* Generation uses ``/completions`` with ``logprobs=0`` (the sampled tokens' logprobs) and
  ``return_tokens_as_token_ids`` so token ids come back, not strings that would need re-encoding.
* Loglikelihood uses ``/completions`` with ``echo=True, logprobs=1, max_tokens=1``: the echoed
  prompt carries each prompt token's logprob and the top-1 alternative, which gives ``is_greedy``.
* Requests run on a bounded thread pool; 429, 5xx and connection errors are retried with
  exponential backoff (``Retry-After`` honoured), moving on to the next base URL on each retry.
  Any other HTTP error is the caller's mistake and stops the run with one line.

Only the standard library is used (``urllib``), so the backend adds no dependency.
"""

from __future__ import annotations

import json
import logging
import math
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import count
from threading import Lock
from typing import Any

from llmgen.backends.base import Backend, Completion, GenerationRequest, LoglikelihoodResult
from llmgen.errors import LlmgenError

log = logging.getLogger("llmgen")

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


def parse_base_urls(base_url: str | Sequence[str] | None) -> list[str]:
    """``"http://a/v1,http://b/v1"`` (or a list) → clean URLs ending in ``/v1``; checked before any request."""
    if base_url is None:
        raise LlmgenError("the openai backend needs --base-url (e.g. http://127.0.0.1:8000/v1)")
    parts = base_url.split(",") if isinstance(base_url, str) else list(base_url)
    urls = []
    for part in (p.strip().rstrip("/") for p in parts):
        if not part:
            continue
        if not part.startswith(("http://", "https://")):
            raise LlmgenError(f"--base-url entry {part!r} must start with http:// or https://")
        urls.append(part if part.endswith("/v1") else part + "/v1")
    if not urls:
        raise LlmgenError("--base-url is empty")
    return urls


def backoff_delay(attempt: int, base: float, cap: float, retry_after: str | None) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): the server's ``Retry-After`` or ``base * 2**attempt``."""
    if retry_after:
        try:
            return min(cap, max(0.0, float(retry_after)))
        except ValueError:
            pass
    return min(cap, base * 2**attempt)


class ServerPool:
    """POSTs JSON to a set of base URLs: round-robin placement, retries with backoff, failover."""

    def __init__(self, urls: list[str], api_key: str | None = None, max_retries: int = 6,
                 backoff: float = 0.5, backoff_cap: float = 30.0, timeout: float = 600.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.urls = urls
        self.api_key = api_key
        self.max_retries = max_retries
        self.backoff = backoff
        self.backoff_cap = backoff_cap
        self.timeout = timeout
        self.sleep = sleep
        self._next = count()
        self._lock = Lock()
        self.retries = 0
        self.requests_per_url = dict.fromkeys(urls, 0)

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def request(self, path: str, body: dict[str, Any] | None = None, max_retries: int | None = None) -> dict[str, Any]:
        """POST ``body`` (GET when None) to ``<url><path>`` on the next server; retried on transient failures."""
        retries = self.max_retries if max_retries is None else max_retries
        with self._lock:
            first = next(self._next)
        last_error = ""
        for attempt in range(retries + 1):
            url = self.urls[(first + attempt) % len(self.urls)]
            data = None if body is None else json.dumps(body).encode()
            req = urllib.request.Request(url + path, data=data, headers=self._headers(),
                                         method="GET" if body is None else "POST")
            retry_after = None
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    out = json.loads(resp.read())
                with self._lock:
                    self.requests_per_url[url] += 1
                return out
            except urllib.error.HTTPError as e:
                detail = e.read().decode(errors="replace")[:300].replace("\n", " ")
                if e.code not in RETRY_STATUS:
                    raise LlmgenError(f"server {url} answered {e.code} to {path}: {detail}") from None
                last_error, retry_after = f"{e.code} {detail}", e.headers.get("Retry-After")
            except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
                last_error = str(getattr(e, "reason", e))
            if attempt == retries:
                break
            with self._lock:
                self.retries += 1
            delay = backoff_delay(attempt, self.backoff, self.backoff_cap, retry_after)
            log.warning("openai backend: %s%s failed (%s); retry %d/%d in %.1fs", url, path, last_error,
                        attempt + 1, retries, delay)
            self.sleep(delay)
        raise LlmgenError(f"{path} failed after {retries + 1} attempts on {', '.join(self.urls)}: {last_error}")


def _token_id(token: str) -> int:
    """``"token_id:123"`` (vLLM's ``return_tokens_as_token_ids``) → 123."""
    if not token.startswith("token_id:"):
        raise LlmgenError(f"server returned token {token!r}, not a token id; it must support return_tokens_as_token_ids")
    return int(token.split(":", 1)[1])


def completion_from_choice(choice: dict[str, Any], truncated: bool = False) -> Completion:
    """One ``/completions`` choice (with ``logprobs``) → a ``Completion`` like the other backends return."""
    lp = choice.get("logprobs") or {}
    ids = [_token_id(t) for t in lp.get("tokens") or []]
    lps = [float("nan") if x is None else float(x) for x in lp.get("token_logprobs") or []]
    finish = "stop" if choice.get("finish_reason") == "stop" else "length"
    return Completion(text=choice["text"], token_ids=ids, logprobs=lps, finish_reason=finish, truncated=truncated)


def score_from_echo(choice: dict[str, Any], ctx_len: int, cont: Sequence[int]) -> LoglikelihoodResult:
    """Continuation score from an echoed prompt: positions ``ctx_len..`` of ``token_logprobs``.

    ``top_logprobs[pos]`` holds the actual token and the best alternative; the continuation is
    greedy when no alternative beats its token at any position.
    """
    lp = choice.get("logprobs") or {}
    tokens, token_lps, tops = lp.get("tokens") or [], lp.get("token_logprobs") or [], lp.get("top_logprobs") or []
    if len(token_lps) < ctx_len + len(cont):
        raise LlmgenError("server returned fewer prompt logprobs than prompt tokens (does it support echo with logprobs?)")
    out, greedy = [], True
    for pos, token in enumerate(cont, start=ctx_len):
        if _token_id(tokens[pos]) != token:
            raise LlmgenError(f"server echoed token {tokens[pos]!r} at position {pos}, expected token_id:{token}")
        value = float(token_lps[pos])
        out.append(value)
        top = tops[pos] or {}
        best = max(top.values(), default=value)
        greedy = greedy and value >= best
    return LoglikelihoodResult(math.fsum(out), len(cont), greedy, out)


class OpenAIBackend(Backend):
    """Generation and scoring through OpenAI-compatible ``/v1/completions`` servers."""

    name = "openai"

    def __init__(self, model: str, base_url: str | Sequence[str] | None = None, adapter: str | None = None,
                 dtype: str = "float32", served_model: str | None = None, api_key: str | None = None,
                 concurrency: int = 8, max_retries: int = 6, backoff: float = 0.5,
                 timeout: float = 600.0, max_length: int | None = None, batch_size: int = 256) -> None:
        """``model`` names the weights (for the tokenizer and the cache key); ``served_model`` is the
        name the servers know it by (default: the first id ``/v1/models`` lists). ``adapter`` is the
        served name of a LoRA adapter (vLLM ``--lora-modules name=path``), used instead of the model.
        ``max_length`` defaults to the ``max_model_len`` the server lists; ``batch_size`` is how many
        requests one call gets from the request cache (committed after each call)."""
        from llmgen.models import load_tokenizer

        urls = parse_base_urls(base_url)
        if concurrency < 1:
            raise LlmgenError(f"concurrency must be >= 1, got {concurrency}")
        super().__init__(model, None, dtype)
        self.adapter = adapter
        self.pool = ServerPool(urls, api_key=api_key, max_retries=max_retries, backoff=backoff, timeout=timeout)
        self.concurrency = concurrency
        self._tok = load_tokenizer(self.model_path)
        self.batch_size = batch_size
        # a wrong URL should fail in seconds, not after the full retry schedule
        listed = self.pool.request("/models", max_retries=min(2, max_retries)).get("data") or []
        if not listed:
            raise LlmgenError(f"server {self.pool.urls[0]} lists no models")
        self.served_model = adapter or served_model or listed[0]["id"]
        entry = next((m for m in listed if m.get("id") == self.served_model), listed[0])
        self._max_length = max_length or entry.get("max_model_len") or self._tok.model_max_length

    GENERATION_OPTIONS = frozenset({"ignore_eos"})  # vLLM's server extension; no full distribution, no logits hook

    def _compute_fingerprint(self) -> str:
        """The weights' fingerprint and the served name (the adapter is a name on the server, not a folder)."""
        from llmgen.models import model_fingerprint

        return f"{model_fingerprint(self.model_path)}@{self.served_model}"

    @property
    def max_length(self) -> int:
        """The server's context length (``max_model_len`` in ``/v1/models``), unless given."""
        return int(self._max_length)

    @property
    def tokenizer(self):
        return self._tok

    def _map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """``fn`` over ``items`` on at most ``concurrency`` threads, results in input order."""
        if len(items) <= 1 or self.concurrency == 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(items))) as pool:
            return list(pool.map(fn, items))

    def _complete(self, prompt_ids: list[int], **params: Any) -> list[dict[str, Any]]:
        body = {"model": self.served_model, "prompt": prompt_ids, "return_tokens_as_token_ids": True, **params}
        choices = self.pool.request("/completions", body).get("choices") or []
        return sorted(choices, key=lambda c: c.get("index", 0))

    def _generate_tokens(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        """One ``/completions`` call per request; the server seeds sample ``j`` with ``seed + j`` (vLLM's rule)."""

        def one(req: GenerationRequest) -> list[Completion]:
            s = req.sampling
            params: dict[str, Any] = {"n": s.n, "temperature": s.temperature, "top_p": s.top_p,
                                      "max_tokens": s.max_tokens, "logprobs": 0, "skip_special_tokens": True}
            if s.stop:
                params["stop"] = list(s.stop)
            if s.ignore_eos:
                params["ignore_eos"] = True
            if req.seeds:
                params["seed"] = req.seeds[0]
            choices = self._complete(list(req.token_ids), **params)
            if len(choices) != s.n:
                raise LlmgenError(f"server returned {len(choices)} completions, asked for {s.n}")
            return [completion_from_choice(c, req.truncated) for c in choices]

        return self._map(one, list(requests))

    def loglikelihood_tokens(self, requests: Sequence[tuple[list[int], list[int]]]) -> list[LoglikelihoodResult]:
        def one(req: tuple[list[int], list[int]]) -> LoglikelihoodResult:
            ctx, cont = req
            choice = self._complete(list(ctx) + list(cont), max_tokens=1, temperature=0.0, echo=True, logprobs=1)[0]
            return score_from_echo(choice, len(ctx), cont)

        return self._map(one, list(requests))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "base_urls": self.pool.urls, "served_model": self.served_model,
                "concurrency": self.concurrency}

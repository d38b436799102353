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
* Every answer is checked before it is used (and so before the request cache stores it): a body
  that is not JSON (an HTML error page with status 200) or JSON of the wrong shape is one error
  line naming the server, never a traceback and never a cached answer.
* A server that accepts the connection but never answers costs ``timeout`` seconds (default
  ``DEFAULT_TIMEOUT``, enough for one request of a few hundred tokens; raise it with
  ``--model-args timeout=S``) and one more try, each announced in the log, then one error line.
* The API key comes from the environment (``$OPENAI_API_KEY``, or the variable named by
  ``--api-key-env NAME``): it is never an argument, so it never reaches config.json, results.json,
  samples, logs or a cache key.

Only the standard library is used (``urllib``), so the backend adds no dependency.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import count
from threading import Lock
from typing import Any

from llmgen.backends.base import Backend, Completion, GenerationRequest, LoglikelihoodResult, register_backend
from llmgen.errors import LlmgenError

log = logging.getLogger("llmgen")

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
DEFAULT_TIMEOUT = 120.0  # seconds one request may take: a few hundred tokens on a busy server
API_KEY_ENV = "OPENAI_API_KEY"


def api_key_from_env(name: str | None = None) -> str | None:
    """The API key in ``$name`` (default ``$OPENAI_API_KEY``; unset there: no key, as a local server
    needs none). A variable named on purpose must be set."""
    key = os.environ.get(name or API_KEY_ENV)
    if name and not key:
        raise LlmgenError(f"--api-key-env {name}: the environment variable {name} is not set")
    return key or None


def snippet(data: bytes | str, size: int = 80) -> str:
    """The start of a server's answer on one line, for an error message."""
    text = data.decode(errors="replace") if isinstance(data, bytes) else data
    return " ".join(text.split())[:size]


def choices_of(answer: dict[str, Any], n: int, path: str, field: str) -> list[dict[str, Any]]:
    """The ``n`` choices of an answer, each a mapping with ``field``, in index order; anything else
    is one error line (a proxy's or a wrong server's answer), raised before anything is cached."""
    choices = answer.get("choices")
    if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
        raise LlmgenError(f"server answered {path} without a list of choices: {snippet(json.dumps(answer))}")
    if len(choices) != n:
        raise LlmgenError(f"server returned {len(choices)} completions to {path}, asked for {n}")
    for c in choices:
        value = c
        for key in field.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        if not isinstance(value, str) and not (value is None and field.endswith("content")):
            raise LlmgenError(f"server answered {path} with a choice whose {field} is not text: "
                              f"{snippet(json.dumps(c))}")
    return sorted(choices, key=lambda c: c.get("index", 0) if isinstance(c.get("index"), int) else 0)


def map_concurrent(fn: Callable[[Any], Any], items: Sequence[Any], concurrency: int) -> list[Any]:
    """``fn`` over ``items`` on at most ``concurrency`` threads, results in input order."""
    if len(items) <= 1 or concurrency == 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=min(concurrency, len(items))) as pool:
        return list(pool.map(fn, items))


def parse_base_urls(base_url: str | Sequence[str] | None, backend: str = "openai") -> list[str]:
    """``"http://a/v1,http://b/v1"`` (or a list) → clean URLs ending in ``/v1``; checked before any request."""
    if base_url is None:
        raise LlmgenError(f"the {backend} backend needs --base-url (e.g. http://127.0.0.1:8000/v1)")
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
                 backoff: float = 0.5, backoff_cap: float = 30.0, timeout: float = DEFAULT_TIMEOUT,
                 sleep: Callable[[float], None] = time.sleep, timeout_retries: int = 1) -> None:
        """``timeout``: seconds without an answer before a try counts as failed; a server that
        times out is tried ``timeout_retries`` more times at most (a hung server should cost
        minutes, not ``max_retries`` times the timeout)."""
        if timeout <= 0:
            raise LlmgenError(f"timeout must be > 0 seconds, got {timeout}")
        self.urls = urls
        self.api_key = api_key
        self.max_retries = max_retries
        self.timeout_retries = timeout_retries
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
        last_error, timeouts = "", 0
        for attempt in range(retries + 1):
            url = self.urls[(first + attempt) % len(self.urls)]
            data = None if body is None else json.dumps(body).encode()
            req = urllib.request.Request(url + path, data=data, headers=self._headers(),
                                         method="GET" if body is None else "POST")
            retry_after = None
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    raw, kind = resp.read(), resp.headers.get("Content-Type", "no content type")
                out = self._parse(raw, kind, url, path)
                with self._lock:
                    self.requests_per_url[url] += 1
                return out
            except urllib.error.HTTPError as e:
                detail = snippet(e.read(), 300)
                if e.code not in RETRY_STATUS:
                    raise LlmgenError(f"server {url} answered {e.code} to {path}: {detail}") from None
                last_error, retry_after = f"{e.code} {detail}", e.headers.get("Retry-After")
            except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
                reason = getattr(e, "reason", e)
                if not isinstance(reason, TimeoutError):
                    last_error = str(reason)
                else:
                    timeouts += 1
                    last_error = f"no answer within {self.timeout:g} s"
                    if timeouts > self.timeout_retries:
                        raise LlmgenError(f"server {url} accepted the connection but sent no answer to {path} within "
                                          f"{self.timeout:g} s ({timeouts} tries); if one request needs longer, "
                                          f"raise --model-args timeout=SECONDS") from None
            if attempt == retries:
                break
            with self._lock:
                self.retries += 1
            delay = backoff_delay(attempt, self.backoff, self.backoff_cap, retry_after)
            log.warning("openai backend: %s%s failed (%s); retry %d/%d in %.1fs", url, path, last_error,
                        attempt + 1, retries, delay)
            self.sleep(delay)
        raise LlmgenError(f"{path} failed after {retries + 1} attempts on {', '.join(self.urls)}: {last_error}")

    @staticmethod
    def _parse(raw: bytes, kind: str, url: str, path: str) -> dict[str, Any]:
        """A JSON object, or one error line saying what came instead (an HTML page answered with 200)."""
        try:
            out = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise LlmgenError(f"server {url} answered {path} with {kind}, not JSON: {snippet(raw)!r} "
                              f"(is --base-url an OpenAI-compatible API?)") from None
        if not isinstance(out, dict):
            raise LlmgenError(f"server {url} answered {path} with JSON that is not an object: {snippet(raw)!r}")
        return out


def list_models(pool: ServerPool, max_retries: int) -> list[dict[str, Any]]:
    """``/models`` of the first server that answers: a wrong URL fails in seconds, not after the
    full retry schedule; an answer without model entries is one error line."""
    listed = pool.request("/models", max_retries=min(2, max_retries)).get("data")
    if not isinstance(listed, list) or not all(isinstance(m, dict) and isinstance(m.get("id"), str) for m in listed):
        raise LlmgenError(f"server {pool.urls[0]} answered /models without a list of models (data: [{{id: ...}}])")
    if not listed:
        raise LlmgenError(f"server {pool.urls[0]} lists no models")
    return listed


def _token_id(token: str) -> int:
    """``"token_id:123"`` (vLLM's ``return_tokens_as_token_ids``) → 123."""
    if not isinstance(token, str) or not token.startswith("token_id:"):
        raise LlmgenError(f"server returned token {token!r}, not a token id; it must support return_tokens_as_token_ids")
    return int(token.split(":", 1)[1])


def completion_from_choice(choice: dict[str, Any], truncated: bool = False) -> Completion:
    """One ``/completions`` choice (with ``logprobs``) → a ``Completion`` like the other backends return."""
    lp = choice.get("logprobs") or {}
    if not isinstance(lp, dict) or not isinstance(lp.get("tokens") or [], list):
        raise LlmgenError(f"server answered /completions with logprobs of the wrong shape: {snippet(json.dumps(lp))}")
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
    if not isinstance(lp, dict):
        raise LlmgenError(f"server answered /completions with logprobs of the wrong shape: {snippet(json.dumps(lp))}")
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


@register_backend("openai")
class OpenAIBackend(Backend):
    """Generation and scoring through OpenAI-compatible ``/v1/completions`` servers."""

    def __init__(self, model: str, base_url: str | Sequence[str] | None = None, adapter: str | None = None,
                 dtype: str = "float32", served_model: str | None = None, api_key_env: str | None = None,
                 concurrency: int = 8, max_retries: int = 6, backoff: float = 0.5,
                 timeout: float = DEFAULT_TIMEOUT, max_length: int | None = None, batch_size: int = 256) -> None:
        """``model`` names the weights (for the tokenizer and the cache key); ``served_model`` is the
        name the servers know it by (default: the first id ``/v1/models`` lists). ``adapter`` is the
        served name of a LoRA adapter (vLLM ``--lora-modules name=path``), used instead of the model.
        ``max_length`` defaults to the ``max_model_len`` the server lists; ``batch_size`` is how many
        requests one call gets from the request cache (committed after each call); the API key is
        read from ``$api_key_env`` (default ``$OPENAI_API_KEY``)."""
        from llmgen.models import load_tokenizer

        urls = parse_base_urls(base_url, self.name)
        if concurrency < 1:
            raise LlmgenError(f"concurrency must be >= 1, got {concurrency}")
        super().__init__(model, None, dtype)
        self.adapter = adapter
        self.pool = ServerPool(urls, api_key=api_key_from_env(api_key_env), max_retries=max_retries,
                               backoff=backoff, timeout=timeout)
        self.concurrency = concurrency
        self._tok = load_tokenizer(self.model_path)
        self.batch_size = batch_size
        listed = list_models(self.pool, max_retries)
        self.served_model = adapter or served_model or listed[0]["id"]
        entry = next((m for m in listed if m.get("id") == self.served_model), listed[0])
        self._entry = {k: v for k, v in entry.items() if k != "created"}  # "created" is the listing's time
        self._max_length = max_length or entry.get("max_model_len") or self._tok.model_max_length

    GENERATION_OPTIONS = frozenset({"ignore_eos"})  # vLLM's server extension; no full distribution, no logits hook

    def _compute_fingerprint(self) -> str:
        """The local weights' fingerprint (the tokenizer's source), the served name (the adapter is a
        name on the server, not a folder) and a hash of the server's ``/v1/models`` entry for it (its
        ``root``, context length, ...), so a server serving other weights under the name gets other keys."""
        from llmgen.models import model_fingerprint

        served = hashlib.sha256(json.dumps(self._entry, sort_keys=True, default=str).encode()).hexdigest()[:12]
        return f"{model_fingerprint(self.model_path)}@{self.served_model}#{served}"

    @property
    def max_length(self) -> int:
        """The server's context length (``max_model_len`` in ``/v1/models``), unless given."""
        return int(self._max_length)

    @property
    def tokenizer(self):
        return self._tok

    def _map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        return map_concurrent(fn, items, self.concurrency)

    def _complete(self, prompt_ids: list[int], n: int = 1, **params: Any) -> list[dict[str, Any]]:
        body = {"model": self.served_model, "prompt": prompt_ids, "return_tokens_as_token_ids": True, "n": n, **params}
        return choices_of(self.pool.request("/completions", body), n, "/completions", "text")

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

"""A request cache around any backend: same interface, answers looked up before they are computed.

A key hashes everything a result depends on: the model's fingerprint (content hash for in-memory
models), the adapter, the backend, the dtype, the context length (it decides truncation), the
request kind, the request itself (the rendered prompt text, the pair, or the text) and, for
generation, every sampling setting including the seed (an n-gram block by its content hash, see
``NgramBlock``). Requests not in the cache go to the backend in batches of ``backend.batch_size``;
each batch is committed before the next starts, so a killed run loses at most one batch, and
``on_batch`` (a progress callback) moves once per batch. A disabled cache (``RequestCache(None)``)
keeps nothing, so its keys only find repeated requests within one call, on one model: they leave the
fingerprint out and an in-memory model is never hashed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from llmgen.backends.base import (
    Backend,
    Completion,
    GenPrompt,
    LoglikelihoodResult,
    RollingResult,
    SamplingConfig,
    TokenPrompt,
    per_request,
)
from llmgen.cache import RequestCache, request_key

KEY_VERSION = 2  # bump when a backend's results for the same key change (2: per-request seeds)

Progress = Callable[[int], None] | None


class CachedBackend:
    """``generate`` / ``loglikelihood`` / ``loglikelihood_rolling`` of ``backend``, through ``cache``.

    Other attributes (``tokenizer``, ``max_length``, ``describe()``, ...) are the backend's.
    ``batch_size`` (default: the backend's) sets how many missing requests go to it per call.
    """

    def __init__(self, backend: Backend, cache: RequestCache, batch_size: int | None = None) -> None:
        self.backend = backend
        self.cache = cache
        self.batch_size = batch_size or backend.batch_size

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)

    def key(self, kind: str, **request: Any) -> str:
        """The cache key of one request of ``kind``."""
        b = self.backend
        fp = b.fingerprint if self.cache.path is not None else None
        return request_key(v=KEY_VERSION, fp=fp, adapter=b.adapter, backend=b.name, dtype=str(b.dtype),
                           max_length=b.max_length, kind=kind, **request)

    def generate(self, prompts: Sequence[GenPrompt], sampling: SamplingConfig | Sequence[SamplingConfig],
                 on_batch: Progress = None) -> list[list[Completion]]:
        """Text and chat prompts are keyed by what the backend sends (``Backend.request_prompt``: the
        rendered text, or a chat server's messages), ``TokenPrompt``s by their ids."""
        settings = per_request(sampling, len(prompts))
        self.backend.check_options(settings)
        texts = [self.backend.request_prompt(p) for p in prompts]  # text, or messages for a chat server
        t0 = time.perf_counter()
        keys = [self.key("generate", sampling=s.to_dict(),
                         **({"prompt_ids": list(t.ids)} if isinstance(t, TokenPrompt) else {"prompt": t}))
                for t, s in zip(texts, settings, strict=True)]
        self.cache.add_seconds("cache", time.perf_counter() - t0)

        def compute(idx: list[int]) -> list[list[dict]]:
            outs = self.backend.generate([texts[i] for i in idx], [settings[i] for i in idx])
            return [[c.to_dict() for c in comps] for comps in outs]

        return [[Completion(**c) for c in comps] for comps in self._through("generate", keys, compute, on_batch)]

    def loglikelihood(self, pairs: Sequence[tuple[str, str]], on_batch: Progress = None) -> list[LoglikelihoodResult]:
        t0 = time.perf_counter()
        keys = [self.key("loglikelihood", pair=list(p)) for p in pairs]
        self.cache.add_seconds("cache", time.perf_counter() - t0)

        def compute(idx: list[int]) -> list[dict]:
            return [asdict(r) for r in self.backend.loglikelihood([pairs[i] for i in idx])]

        return [LoglikelihoodResult(**r) for r in self._through("loglikelihood", keys, compute, on_batch)]

    def loglikelihood_tokens(self, pairs: Sequence[tuple[list[int], list[int]]],
                             on_batch: Progress = None) -> list[LoglikelihoodResult]:
        """Already tokenised (context ids, continuation ids) pairs, for callers that tokenise themselves (lm-eval)."""
        pairs = [(list(c), list(x)) for c, x in pairs]
        t0 = time.perf_counter()
        keys = [self.key("loglikelihood_tokens", ctx=c, cont=x) for c, x in pairs]
        self.cache.add_seconds("cache", time.perf_counter() - t0)

        def compute(idx: list[int]) -> list[dict]:
            return [asdict(r) for r in self.backend.loglikelihood_tokens([pairs[i] for i in idx])]

        return [LoglikelihoodResult(**r) for r in self._through("loglikelihood", keys, compute, on_batch)]

    def loglikelihood_rolling(self, texts: Sequence[str], on_batch: Progress = None) -> list[RollingResult]:
        t0 = time.perf_counter()
        keys = [self.key("loglikelihood_rolling", text=t) for t in texts]
        self.cache.add_seconds("cache", time.perf_counter() - t0)

        def compute(idx: list[int]) -> list[dict]:
            return [asdict(r) for r in self.backend.loglikelihood_rolling([texts[i] for i in idx])]

        return [RollingResult(**r) for r in self._through("loglikelihood_rolling", keys, compute, on_batch)]

    def _through(self, kind: str, keys: list[str], compute: Callable[[list[int]], list], on_batch: Progress) -> list:
        """Values of ``keys``: cached ones looked up, missing ones computed and committed batch by batch.

        Repeated keys (the same request twice) are computed once. The seconds spent computing go to
        the cache's ``seconds[kind]``, lookups and commits to ``seconds["cache"]`` (results.json timings).
        """
        t0 = time.perf_counter()
        found = self.cache.get_many(list(dict.fromkeys(keys)))
        todo: list[int] = []
        seen = set(found)
        for i, k in enumerate(keys):
            if k not in seen:
                todo.append(i)
                seen.add(k)
        if on_batch:
            on_batch(len(keys) - len(todo))
        self.cache.add_seconds("cache", time.perf_counter() - t0)
        for start in range(0, len(todo), self.batch_size):
            idx = todo[start : start + self.batch_size]
            t0 = time.perf_counter()
            values = compute(idx)
            t1 = time.perf_counter()
            new = dict(zip((keys[i] for i in idx), values, strict=True))
            self.cache.put_many(new)
            self.cache.add_seconds(kind, t1 - t0)
            self.cache.add_seconds("cache", time.perf_counter() - t1)
            found.update(new)
            if on_batch:
                on_batch(len(idx))
        return [found[k] for k in keys]

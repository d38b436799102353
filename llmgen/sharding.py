"""Evaluation sharded over data-parallel ranks (``torchrun`` / ``accelerate launch``).

Without this every rank of a multi-process launch would repeat the whole evaluation. With it, each
call the evaluation loop makes (``generate``, ``loglikelihood``, ``loglikelihood_rolling``) is split
by request index (rank ``r`` of ``W`` takes requests ``r, r+W, ...``), each rank computes its slice
through the request cache, and the slices are gathered (``all_gather_object`` over gloo) so every
rank holds all results in the original order; rank 0 alone writes the run folder.

Order of the layers, and why: the loop's own cache lookup is switched off (``PassThroughCache``) and
each rank looks up only its slice (``ShardedBackend`` → ``CachedBackend`` → backend). If the loop
looked up the cache first, ranks that saw different cache contents (another rank writing, a
per-node cache file) would make different numbers of collective calls and hang. This way every
rank makes the same calls, the cache only decides what a rank computes, and a killed run resumes:
its finished batches are in the cache, whichever rank computed them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from llmgen.backends import backend_class
from llmgen.backends.base import Backend, per_request
from llmgen.backends.cached import CachedBackend
from llmgen.cache import RequestCache
from llmgen.errors import LlmgenError

_GROUP: Any = None


def world_size() -> int:
    """Processes in this launch (``WORLD_SIZE``, set by torchrun and ``accelerate launch``); 1 alone."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def start(backend_name: str) -> int:
    """Join the ranks (a gloo group, whatever the GPUs use) and pin this rank's GPU; returns the world size.

    Call before the model loads: the HF backend's ``"cuda"`` then means this rank's own GPU.
    """
    global _GROUP
    world = world_size()
    if world == 1 or _GROUP is not None:
        return world
    if not backend_class(backend_name).SHARDABLE:  # the backend registry knows
        raise LlmgenError(f"sharded evaluation runs the hf or openai backends, not {backend_name}; for vLLM use one "
                          "process with --model-args data_parallel_size=N (or tensor_parallel_size=N)")
    import torch
    import torch.distributed as dist

    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    if not dist.is_initialized():
        dist.init_process_group("gloo")
    _GROUP = dist.group.WORLD if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
    return world


def all_gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (pickled over the gloo group)."""
    import torch.distributed as dist

    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj, group=_GROUP)
    return out


class PassThroughCache:
    """What the evaluation loop sees as its cache under sharding: no lookups, no writes (the ranks'
    ``CachedBackend`` do both), hit/miss counts summed over the ranks, ``close`` of the real cache."""

    def __init__(self, cache: RequestCache, sharded: ShardedBackend) -> None:
        self.cache, self.sharded = cache, sharded

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        return {}

    def put_many(self, items: dict[str, Any]) -> None:
        pass

    @property
    def path(self):
        return self.cache.path

    @property
    def seconds(self) -> dict[str, float]:
        return self.cache.seconds

    def add_seconds(self, stage: str, seconds: float) -> None:
        """Stage timings (``results.json`` ``timings``) go to the real cache's ledger."""
        self.cache.add_seconds(stage, seconds)

    @property
    def hits(self) -> int:
        return sum(h for h, _ in self.sharded.rank_stats)

    @property
    def misses(self) -> int:
        return sum(m for _, m in self.sharded.rank_stats)

    def close(self) -> None:
        self.cache.close()


class ShardedBackend:
    """``backend`` through ``cache``, each call split over the ranks and gathered back in order.

    Other attributes are the backend's; ``batch_size`` is the backend's times the world size, so
    each rank gets one full backend batch per call.
    """

    def __init__(self, backend: Backend, cache: RequestCache) -> None:
        self.backend = backend
        self.inner = CachedBackend(backend, cache)
        self.cache = cache
        self.rank, self.world = rank(), world_size()
        self.batch_size = backend.batch_size * self.world
        self.rank_stats = [(0, 0)] * self.world

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)

    def _split(self, method: Callable[..., list], *columns: Sequence[Any]) -> list:
        """``method`` over this rank's rows of ``columns``; all ranks' results merged in row order."""
        n = len(columns[0])
        mine = range(self.rank, n, self.world)
        local = method(*([col[i] for i in mine] for col in columns)) if len(mine) else []
        gathered = all_gather((local, (self.cache.hits, self.cache.misses)))
        self.rank_stats = [stats for _, stats in gathered]
        out: list[Any] = [None] * n
        for r, (results, _) in enumerate(gathered):
            out[r::self.world] = results
        return out

    def generate(self, prompts: Sequence[Any], sampling, on_batch=None) -> list:
        return self._split(self.inner.generate, list(prompts), per_request(sampling, len(prompts)))

    def loglikelihood(self, pairs: Sequence[tuple[str, str]], on_batch=None) -> list:
        return self._split(self.inner.loglikelihood, list(pairs))

    def loglikelihood_tokens(self, pairs: Sequence[tuple[list[int], list[int]]], on_batch=None) -> list:
        """Already tokenised pairs (TOFU's answers with EOS), split over the ranks like the others."""
        return self._split(self.inner.loglikelihood_tokens, [(list(c), list(x)) for c, x in pairs])

    def loglikelihood_rolling(self, texts: Sequence[str], on_batch=None) -> list:
        return self._split(self.inner.loglikelihood_rolling, list(texts))

    def describe(self) -> dict[str, Any]:
        return {**self.backend.describe(), "data_parallel_ranks": self.world}


def shard(backend: Backend, cache: RequestCache) -> tuple[Any, Any]:
    """(backend, cache) for the evaluation loop: as they are in one process, sharded under a launcher."""
    if world_size() == 1:
        return backend, cache
    sharded = ShardedBackend(backend, cache)
    return sharded, PassThroughCache(cache, sharded)

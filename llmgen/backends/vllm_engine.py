"""The vLLM backend: batched sampling with ``SamplingParams(n=...)`` and scoring via ``prompt_logprobs``.

One engine per set of engine settings (model, dtype, context, seed, LoRA on/off, ...) is kept per
process and shared by every open backend with those settings, because starting an engine costs tens
of seconds on CPU; ``close()`` gives back a backend's reference and the last one shuts the engine
down. On CPU the KV cache size comes from ``VLLM_CPU_KVCACHE_SPACE`` (GiB); we default it to 2 so
the engine fits beside an HF model in 24 GiB.
Scripts that use this backend need an ``if __name__ == "__main__":`` guard: the engine starts a
subprocess.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmgen import processes
from llmgen.backends.base import Backend, Completion, GenerationRequest, LoglikelihoodResult, register_backend
from llmgen.errors import LlmgenError

# key -> [engine, number of open backends on it]; the engine shuts down when the last one closes.
_ENGINES: dict[tuple, list] = {}


def _settings_key(settings: dict[str, Any]) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in settings.items()))


def _start_engine(settings: dict[str, Any]):
    """A new ``vllm.LLM`` for these settings (the slow part: tens of seconds on CPU)."""
    import torch

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    from vllm import LLM

    kwargs = {k: v for k, v in settings.items() if v is not None}
    # CPU: torch.compile warm-up costs a minute per engine start and buys little for small
    # models; GPU keeps CUDA graphs and compilation.
    kwargs.setdefault("enforce_eager", not torch.cuda.is_available())
    if not torch.cuda.is_available():
        kwargs.pop("gpu_memory_utilization", None)
        # vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when a seeded request's
        # prefill is split across steps; without chunked prefill no prefill is split.
        kwargs.setdefault("enable_chunked_prefill", False)
    if not kwargs.get("enable_lora"):
        kwargs.pop("max_lora_rank", None)
    # the weights' progress bar (tqdm, in the engine process) only with vLLM's INFO logs (--verbose)
    kwargs.setdefault("use_tqdm_on_load", os.environ.get("VLLM_LOGGING_LEVEL") in ("DEBUG", "INFO"))
    try:
        with processes.engine_start():  # its processes end with llmgen, however it ends
            return LLM(**kwargs)
    except TypeError as e:
        raise LlmgenError(f"bad vLLM engine argument: {e}") from None
    except ValueError as e:  # pydantic's ValidationError: a setting the model or machine cannot take
        detail = next((ln.strip() for ln in str(e).splitlines()[1:] if ln.strip() and not ln.strip().startswith("For further")),
                      str(e).splitlines()[0] if str(e) else type(e).__name__)
        raise LlmgenError(f"vLLM refused the engine settings: {detail}") from None


def _engine(settings: dict[str, Any]):
    """The engine for these settings, started on first use and shared by every open backend with
    the same settings; each call takes a reference that ``_release`` gives back."""
    key = _settings_key(settings)
    if key not in _ENGINES:
        _ENGINES[key] = [_start_engine(settings), 0]
    _ENGINES[key][1] += 1
    return key, _ENGINES[key][0]


def _release(key: tuple) -> None:
    """Give back one reference to the engine under ``key``; the last one shuts the engine down."""
    entry = _ENGINES.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] > 0:
        return
    llm = _ENGINES.pop(key)[0]
    try:
        llm.llm_engine.engine_core.shutdown()
    except Exception:
        pass
    del llm, entry
    import gc

    gc.collect()
    if not _ENGINES:  # no engine left: whatever an engine start left running goes now
        processes.reap_leftovers()


_LORA_FALLBACK_WARNED = False


def _warn_lora_fallback() -> None:
    global _LORA_FALLBACK_WARNED
    import logging

    logging.getLogger("llmgen").warning(
        "vLLM: scoring with a LoRA adapter one request at a time (batched prompt_logprobs + LoRA is broken "
        "in this vLLM version)")
    _LORA_FALLBACK_WARNED = True


def _lora_rank(adapter: str) -> int:
    import json

    cfg = Path(adapter) / "adapter_config.json"
    if not cfg.is_file():
        raise LlmgenError(f"adapter folder has no adapter_config.json: {adapter}")
    return int(json.loads(cfg.read_text()).get("r", 16))


DEFAULT_MAX_MODEL_LEN = 2048  # keeps the CPU KV cache small; a model with a shorter context gets its own


def default_max_model_len(model_path: str) -> int:
    """``DEFAULT_MAX_MODEL_LEN``, or the model's own context length where that is shorter.

    vLLM refuses a ``max_model_len`` above the model's ``max_position_embeddings``; a fixed 2048
    made every model with a 1024-token context fail at engine start.
    """
    import json

    cfg = Path(model_path) / "config.json"
    try:
        conf = json.loads(cfg.read_text())
    except (OSError, ValueError):
        return DEFAULT_MAX_MODEL_LEN
    own = next((conf[k] for k in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length")
                if isinstance(conf.get(k), int)), None)
    return min(DEFAULT_MAX_MODEL_LEN, own) if own else DEFAULT_MAX_MODEL_LEN


@register_backend("vllm")
class VLLMBackend(Backend):
    SHARDABLE = False  # one engine per process: data_parallel_size / tensor_parallel_size instead
    LOCAL_WEIGHTS = True  # dtype, adapter folder and custom code are checked before the weights load

    @classmethod
    def accepted_args(cls) -> set[str]:
        """``__init__``'s named arguments and every ``vllm.EngineArgs`` field (the rest of
        ``--model-args`` goes to ``vllm.LLM`` as engine arguments)."""
        import dataclasses
        import inspect

        from vllm.engine.arg_utils import EngineArgs

        params = inspect.signature(cls.__init__).parameters
        named = {n for n, p in params.items() if n not in ("self", "model") and p.kind is not p.VAR_KEYWORD}
        return named | {f.name for f in dataclasses.fields(EngineArgs)}

    def __init__(self, model: str, adapter: str | None = None, dtype: str = "float32", seed: int = 0,
                 tensor_parallel_size: int = 1, max_model_len: int | None = None,
                 gpu_memory_utilization: float = 0.85, batch_size: int = 256, **engine_kwargs: Any) -> None:
        """``engine_kwargs`` go to ``vllm.LLM`` as they are (e.g. ``data_parallel_size``, ``enforce_eager``).

        ``batch_size`` is how many requests one engine call gets from the request cache (which
        commits after each call); 256 is vLLM's default ``max_num_seqs``, one full scheduler.
        """
        super().__init__(model, adapter, dtype)
        self.batch_size = batch_size
        if max_model_len is None:
            max_model_len = default_max_model_len(self.model_path)
        settings = dict(model=self.model_path, dtype=dtype, seed=seed, tensor_parallel_size=tensor_parallel_size,
                        max_model_len=max_model_len, gpu_memory_utilization=gpu_memory_utilization,
                        enable_prefix_caching=False, enable_lora=adapter is not None,
                        max_lora_rank=max(8, _lora_rank(adapter)) if adapter else None, **engine_kwargs)
        self._engine_key, self.llm = _engine(settings)
        self._lora = None
        if adapter:
            from vllm.lora.request import LoRARequest

            self._lora = LoRARequest("adapter", 1, str(Path(adapter).resolve()))

    # vLLM reports top-k logprobs, not the full distribution's entropy, and has no per-request logits
    # hook in this version: return_entropy and block_ngrams are refused (Backend.check_options)
    GENERATION_OPTIONS = frozenset({"ignore_eos"})

    @property
    def tokenizer(self):
        return self.llm.get_tokenizer()

    @property
    def max_length(self) -> int:
        """The engine's ``max_model_len`` (from ``max_model_len=`` or, if None, the model config)."""
        return int(self.llm.llm_engine.model_config.max_model_len)

    def _generate_tokens(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]:
        """One engine call with one ``SamplingParams`` per request, each with its own seed.

        vLLM seeds the children of an ``n > 1`` request with ``seed + j``, the rule
        ``Backend.prepare_generation`` uses for every backend.
        """
        from vllm import SamplingParams

        params = [SamplingParams(n=r.sampling.n, temperature=r.sampling.temperature, top_p=r.sampling.top_p,
                                 max_tokens=r.sampling.max_tokens, stop=list(r.sampling.stop) or None,
                                 ignore_eos=r.sampling.ignore_eos,
                                 seed=r.seeds[0] if r.seeds else None, logprobs=0) for r in requests]
        inputs = [{"prompt_token_ids": list(r.token_ids)} for r in requests]
        outs = self.llm.generate(inputs, params, lora_request=self._lora, use_tqdm=False)
        results = []
        for req, out in zip(requests, outs, strict=True):
            comps = []
            for c in out.outputs:
                lps = [float(d[t].logprob) if d and t in d else float("nan")
                       for t, d in zip(c.token_ids, c.logprobs or [None] * len(c.token_ids), strict=False)]
                comps.append(Completion(text=c.text, token_ids=list(c.token_ids), logprobs=lps,
                                        finish_reason="stop" if c.finish_reason == "stop" else "length",
                                        truncated=req.truncated))
            results.append(comps)
        return results

    def loglikelihood_tokens(self, requests: Sequence[tuple[list[int], list[int]]]) -> list[LoglikelihoodResult]:
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1)
        inputs = [{"prompt_token_ids": list(c) + list(x)} for c, x in requests]
        if self._lora is None:
            outs = self.llm.generate(inputs, params, use_tqdm=False)
        else:
            # vllm-cpu 0.32: prompt_logprobs with a LoRA crashes the engine when several requests
            # share a step (the LoRA logits mapping is sized per request, not per prompt token;
            # tests/llmgen/test_models.py shows single requests match HF+peft). Score one at a time.
            if not _LORA_FALLBACK_WARNED:
                _warn_lora_fallback()
            outs = [self.llm.generate([inp], params, lora_request=self._lora, use_tqdm=False)[0] for inp in inputs]
        results = []
        for (ctx, cont), out in zip(requests, outs, strict=True):
            plp = out.prompt_logprobs
            if plp is None:
                raise LlmgenError("vLLM returned no prompt logprobs (is prompt_logprobs supported with this LoRA/vLLM version?)")
            token_lps, greedy = [], True
            for pos, token in enumerate(cont, start=len(ctx)):
                entry = plp[pos][token]
                token_lps.append(float(entry.logprob))
                greedy = greedy and entry.rank == 1
            results.append(LoglikelihoodResult(sum(token_lps), len(cont), greedy, token_lps))
        return results

    def close(self) -> None:
        """Give back this backend's reference to its engine: the engine shuts down when no other
        open backend shares it. A second ``close()`` does nothing."""
        key, self._engine_key = self._engine_key, None
        if key is not None:
            _release(key)

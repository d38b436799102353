"""Backends: ``hf`` (transformers forward passes), ``vllm`` (the vLLM engine, CPU or GPU) and
``openai`` (OpenAI-compatible servers such as ``vllm serve``, over HTTP)."""

from __future__ import annotations

from llmgen.backends.base import (
    Backend,
    Completion,
    LoglikelihoodResult,
    SamplingConfig,
    encode_pair,
)
from llmgen.errors import LlmgenError
from llmgen.prompts.chat import apply_chat_template

BACKENDS = ("hf", "vllm", "openai")


def get_backend(name: str, model: str, **kwargs) -> Backend:
    """Build a backend by name; heavy imports happen only for the one chosen."""
    if name == "hf":
        from llmgen.backends.hf import HFBackend

        return HFBackend(model, **kwargs)
    if name == "vllm":
        from llmgen.backends.vllm_engine import VLLMBackend

        return VLLMBackend(model, **kwargs)
    if name == "openai":
        from llmgen.backends.openai import OpenAIBackend

        return OpenAIBackend(model, **kwargs)
    raise LlmgenError(f"unknown backend {name!r} (known: {', '.join(BACKENDS)})")


__all__ = ["Backend", "Completion", "LoglikelihoodResult", "SamplingConfig", "apply_chat_template",
           "encode_pair", "get_backend", "BACKENDS"]

"""Backends, by name: ``hf`` (transformers forward passes), ``vllm`` (the vLLM engine, CPU or GPU),
``openai`` (OpenAI-compatible servers that take token ids, such as ``vllm serve``), ``openai-chat``
and ``openai-completions`` (any OpenAI-compatible chat or text endpoint, hosted APIs included).

One registry knows them all (``BACKENDS``): each backend module registers its class with
``@register_backend("name")``, and the modules of this package are found by walking its folder, so
a new backend is one module (here, or a ``--plugin`` file). Its ``__init__`` arguments are what
``--model-args`` accepts; ``get_backend`` builds one by name, ``backend_on_model`` builds one over a
model a recipe holds in memory.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Any

from llmgen.backends.base import (
    BACKENDS,
    SECRET_ARGS,
    Backend,
    Completion,
    LoglikelihoodResult,
    SamplingConfig,
    encode_pair,
    register_backend,
)
from llmgen.prompts.chat import apply_chat_template

_HELPERS = frozenset({"base", "cached"})  # modules of this package that define no backend


def backend_modules(first: str = "") -> list[str]:
    """This package's backend modules, those whose name starts like ``first`` first (``openai-chat``
    → ``openai_chat``), so that naming one backend imports only its module (hf's imports torch)."""
    names = [i.name for i in pkgutil.iter_modules(__path__) if i.name not in _HELPERS]
    stem = first.replace("-", "_").split("_")[0]
    names.sort(key=lambda n: (not (stem and n.startswith(stem)), n != first.replace("-", "_"), n))
    return [f"{__name__}.{n}" for n in names]


def backend_class(name: str) -> type[Backend]:
    """The class registered as ``name``; this package's modules are imported until one registers it
    (a plugin's backend is registered when ``--plugin`` loads it). Unknown: one line listing all."""
    for module in backend_modules(name):
        if name in BACKENDS:
            break
        importlib.import_module(module)
    return BACKENDS.get(name)


def backend_names() -> list[str]:
    """Every registered backend name (imports every backend module of this package)."""
    for module in backend_modules():
        importlib.import_module(module)
    return list(BACKENDS)


def get_backend(name: str, model: str, **kwargs: Any) -> Backend:
    """Build a backend by name; heavy imports happen only for the one chosen."""
    return backend_class(name)(model, **kwargs)


def backend_on_model(name: str, model: Any, tokenizer: Any, save_dir: str | Path, dtype: str | None = None,
                     label: str = "in-memory", **kwargs: Any) -> Backend:
    """Backend ``name`` over a model held in memory: hf scores the object itself; an engine that loads
    from disk (vllm) gets its weights saved to ``save_dir`` (a peft model merged first) in ``dtype``
    (default: the model's own); ``label`` names an in-memory model in results. The recipes' one way
    to evaluate the model they are training."""
    return backend_class(name).from_model(model, tokenizer, save_dir, dtype=dtype, label=label, **kwargs)


__all__ = ["BACKENDS", "SECRET_ARGS", "Backend", "Completion", "LoglikelihoodResult", "SamplingConfig",
           "apply_chat_template", "backend_class", "backend_names", "backend_on_model", "encode_pair", "get_backend", "register_backend"]

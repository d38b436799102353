"""Shared fixtures: one tiny model folder, the embedded model, and one engine per backend.

Engines are session-scoped: starting vLLM costs tens of seconds on CPU, so the whole suite starts
at most one engine per model and shuts it down at the end.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A saved random-init tiny Llama with a byte-level tokenizer (loads in HF and vLLM)."""
    from llmgen.models import tiny_model

    path = tmp_path_factory.mktemp("tiny_model")
    tiny_model(seed=0, save_to=path)
    return str(path)


@pytest.fixture(scope="session")
def default_model_dir():
    """The de-quantised embedded SmolLM2-135M-Instruct folder."""
    from llmgen.models import default_model_path

    return str(default_model_path())


@pytest.fixture(scope="session")
def hf_default(default_model_dir):
    from llmgen.backends import get_backend

    backend = get_backend("hf", default_model_dir)
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def vllm_default(default_model_dir):
    from llmgen.backends import get_backend

    backend = get_backend("vllm", default_model_dir)
    yield backend
    backend.close()

"""Shared fixtures: one tiny model folder, the embedded model, and one engine per backend.

Engines are session-scoped: starting vLLM costs tens of seconds on CPU, so the whole suite starts
at most one engine per model and shuts it down at the end.
"""

from __future__ import annotations

import inspect
import os
import re

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


# ------------------------------------------------------------------ the `vllm` marker, applied in one place
# Fixtures that start a vLLM engine; a test that uses one (directly, through another fixture, or by
# name in a parametrization resolved with request.getfixturevalue) starts an engine.
ENGINE_FIXTURES = frozenset({"vllm_default"})
# A test or fixture that starts vLLM itself: get_backend("vllm", ...), backend="vllm", "--backend", "vllm".
_STARTS_VLLM = re.compile(r"""get_backend\(\s*["']vllm["']|backend\s*=\s*["']vllm["']|["']--backend["']\s*,\s*["']vllm["']""")


def _source(obj) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return ""


def starts_engine(item: pytest.Item) -> bool:
    """True when running ``item`` starts a vLLM engine (so ``-m "not vllm"`` must drop it)."""
    names = set(getattr(item, "fixturenames", ()))
    callspec = getattr(item, "callspec", None)
    if callspec is not None:
        names |= {v for v in callspec.params.values() if isinstance(v, str)}
    if names & ENGINE_FIXTURES:
        return True
    if _STARTS_VLLM.search(_source(getattr(item, "function", None))):
        return True
    defs = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
    return any(_STARTS_VLLM.search(_source(d.func)) for name in names for d in defs.get(name, ()))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that starts a vLLM engine with ``vllm`` (``-m "not vllm"``: the quick local loop)."""
    for item in items:
        if item.get_closest_marker("vllm") is None and starts_engine(item):
            item.add_marker(pytest.mark.vllm)

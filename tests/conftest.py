"""Shared fixtures: one tiny model folder, the embedded model, and one engine per backend.

Engines are session-scoped: starting vLLM costs tens of seconds on CPU, so the whole suite starts
one engine per model (``vllm_default``, ``vllm_tiny``) and shuts it down at the end. A test that
starts a backend of its own with the same settings while the fixture is open (``run_eval`` with
``--backend vllm``, a recipe's ``backend="vllm"``) shares that engine: ``llmgen.backends.vllm_engine``
counts the backends on an engine and shuts it down only when the last one closes. The terminal
summary lists every engine the pytest process started (``vLLM engine starts``).
"""

from __future__ import annotations

import inspect
import os
import re
import time
from pathlib import Path

import pytest

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # two workers on a 2-core machine: one thread each (torch's two OpenMP threads per process would
    # oversubscribe the cores and spin); subprocesses the tests start inherit it
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)


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
    """A vLLM engine on the embedded model, default settings (what ``--backend vllm`` starts)."""
    from llmgen.backends import get_backend

    backend = get_backend("vllm", default_model_dir)
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def vllm_tiny(tiny_model_dir):
    """A vLLM engine on the tiny model, default settings (context 1024, the model's own). A test
    that runs ``--backend vllm`` on the tiny model takes this fixture to share its engine."""
    from llmgen.backends import get_backend

    backend = get_backend("vllm", tiny_model_dir)
    yield backend
    backend.close()


# ------------------------------------------------------------------ engine starts, counted
# (test id, seconds, model, settings) of every vLLM engine this pytest process started; engines
# started by subprocesses (CLI runs, `vllm serve`) are not seen here.
ENGINE_STARTS: list[tuple[str, float, str, str]] = []


@pytest.fixture(scope="session", autouse=True)
def _count_engine_starts():
    from llmgen.backends import vllm_engine

    start = vllm_engine._start_engine

    def counted(settings):
        t0 = time.perf_counter()
        try:
            return start(settings)
        finally:
            test = os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" ", 1)[0]
            other = {k: v for k, v in settings.items() if k != "model" and v is not None}
            ENGINE_STARTS.append((test, time.perf_counter() - t0, str(settings.get("model")), repr(other)))

    vllm_engine._start_engine = counted
    yield
    vllm_engine._start_engine = start


def pytest_terminal_summary(terminalreporter) -> None:
    """One line per vLLM engine the suite started: a new one in a change shows up here."""
    if not ENGINE_STARTS:
        return
    total = sum(s for _, s, _, _ in ENGINE_STARTS)
    terminalreporter.section(f"vLLM engine starts: {len(ENGINE_STARTS)} in this process, {total:.0f} s")
    for test, seconds, model, other in ENGINE_STARTS:
        terminalreporter.write_line(f"{seconds:6.1f} s  {test}  {Path(model).name}  {other}")



# ------------------------------------------------------------------ run folders written by the real runner
# Two models that disagree: the random tiny model (it answers "positive" to every review) and the
# embedded instruct model. Both are evaluated by ``run_eval`` / ``run_format_eval`` themselves, so
# ``compare`` and ``report`` are tested on exactly the files the runner writes.
RUN_LIMIT = 12  # examples per task: enough for a significant paired difference, a few seconds per run
RUN_FORMATS = 3  # format 1 of this seed is the one where the ranking of the two models reverses


@pytest.fixture(scope="session")
def tiny_hf(tiny_model_dir):
    from llmgen.backends import get_backend

    backend = get_backend("hf", tiny_model_dir)
    yield backend
    backend.close()


# Short prompts with a one-token answer, for sampled runs (4 samples at temperature 1 give
# fractional per-example scores) that cost almost nothing even on the instruct model.
CAPITALS = [("France", "Paris"), ("Italy", "Rome"), ("Germany", "Berlin"), ("Spain", "Madrid"),
            ("Japan", "Tokyo"), ("Egypt", "Cairo")]


@pytest.fixture(scope="session")
def eval_runs(tmp_path_factory, tiny_hf, hf_default, tiny_model_dir, default_model_dir) -> dict:
    """Run folders, by name: ``{tiny,default}_formats`` (sentiment, ``--formats 3``, exhaustive) and
    ``{tiny,default}_sampled`` (a capitals JSONL task, 4 samples at temperature 1: fractional exact match, pass@k)."""
    from llmgen.evaluate import EvalConfig, run_eval
    from llmgen.io import atomic_write_jsonl
    from llmgen.prompts.format_eval import run_format_eval

    root = tmp_path_factory.mktemp("runs")
    capitals = root / "capitals.jsonl"
    atomic_write_jsonl(capitals, [{"prompt": f"The capital of {c} is", "target": t} for c, t in CAPITALS])
    runs = {}
    for name, model, backend in (("tiny", tiny_model_dir, tiny_hf), ("default", default_model_dir, hf_default)):
        cfg = EvalConfig(model=model, tasks=["sentiment"], limit=RUN_LIMIT, cache=None,
                         output_dir=str(root / f"{name}_formats"))
        run_format_eval(cfg, RUN_FORMATS, backend=backend, show_progress=False)
        cfg = EvalConfig(model=model, tasks=[str(capitals)], num_samples=4, temperature=1.0, max_new_tokens=1, seed=1,
                         cache=None, output_dir=str(root / f"{name}_sampled"))
        run_eval(cfg, backend=backend, show_progress=False)
        runs[f"{name}_formats"], runs[f"{name}_sampled"] = root / f"{name}_formats", root / f"{name}_sampled"
    return runs


@pytest.fixture(scope="session")
def recipe_runs(tmp_path_factory, tiny_model_dir) -> dict:
    """Run folders written by two recipes on the tiny model, by name: ``passn`` (CE and DCO, one epoch)
    and ``unlearn`` (NPO, two steps, on the synthetic TOFU set). The FormatSpread recipe writes the
    ``--formats`` schema of ``eval_runs``."""
    import torch

    from llmgen.config import load_config, recipe_config
    from llmgen.recipes.confidence_limiting import ConfidenceLimitingConfig
    from llmgen.recipes.confidence_limiting import run as run_passn
    from llmgen.recipes.npo_unlearning import UnlearnConfig, make_retain_logs
    from llmgen.recipes.npo_unlearning import run as run_unlearn
    from llmgen.tasks.tofu import SyntheticTofuConfig, write_synthetic_tofu

    root = tmp_path_factory.mktemp("recipes")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two threads per process oversubscribe a shared 2-core box
    try:
        run_passn(load_config(ConfidenceLimitingConfig, recipe_config("confidence_limiting", "tiny"),
                              {"model": tiny_model_dir, "output_dir": str(root / "passn")}))
        tofu = write_synthetic_tofu(root / "tofu", SyntheticTofuConfig(n_authors=3, retain_eval_size=3))
        logs = make_retain_logs(tiny_model_dir, str(tofu), "forget10", str(root / "retain_logs.json"), eval_limit=3)
        run_unlearn(load_config(UnlearnConfig, recipe_config("npo_unlearning", "tiny"), {
            "model": tiny_model_dir, "data": str(tofu), "retain_logs": logs, "warmup_epochs": 1.0,
            "train.grad_accum": 4, "output_dir": str(root / "unlearn")}))
    finally:
        torch.set_num_threads(threads)
    return {name: root / name for name in ("passn", "unlearn")}


# ------------------------------------------------------------------ the `vllm` marker, applied in one place
# Fixtures that start a vLLM engine; a test that uses one (directly, through another fixture, or by
# name in a parametrization resolved with request.getfixturevalue) starts an engine.
ENGINE_FIXTURES = frozenset({"vllm_default", "vllm_tiny"})
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


# Session fixtures that cost tens of seconds and serve tests in several files. A session fixture is
# built once per xdist worker, so every test that uses one of these goes to one group (one worker).
SHARED_FIXTURE_GROUPS = {"eval_runs": "run_folders", "recipe_runs": "run_folders"}


def xdist_group(item: pytest.Item, engine: bool) -> str:
    """The xdist group of ``item``: ``vllm`` for a test that starts an engine in the pytest process,
    the group of a costly shared session fixture it uses, else its file."""
    if engine:
        return "vllm"
    names = set(getattr(item, "fixturenames", ()))
    return next((g for f, g in SHARED_FIXTURE_GROUPS.items() if f in names), item.nodeid.split("::")[0])


def _put_in_group(item: pytest.Item, group: str) -> None:
    """Mark ``item`` for xdist group ``group``, and write the group into its node id as xdist's
    ``--dist loadgroup`` expects (``<nodeid>@<group>``). xdist 3.8 writes ``item._nodeid``, which
    pytest 9.2 no longer reads (the id lives in ``item._id``), so without this line every test is
    scheduled on its own: engines and module fixtures built on both workers."""
    item.add_marker(pytest.mark.xdist_group(group))
    try:
        from _pytest.nodeid import NodeId  # pytest >= 9.2; earlier versions read xdist's own rewrite
    except ImportError:
        return
    if getattr(item.config.option, "loadgroup", False) and "@" not in item.nodeid and hasattr(item, "_id"):
        item._id = NodeId.parse(f"{item.nodeid}@{group}")


@pytest.hookimpl(tryfirst=True)  # the markers before xdist's own hook reads them
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that starts a vLLM engine with ``vllm`` (``-m "not vllm"``: the quick local loop).

    Under pytest-xdist (``make test`` runs ``-n 2 --dist loadgroup``) every test that starts an engine
    in the pytest process goes to one worker, so the session engines start once; so do the tests of
    each costly shared session fixture (``SHARED_FIXTURE_GROUPS``: the run folders). Every other test
    (a test marked ``vllm`` by hand that starts vLLM only in a subprocess, like ``make run``'s) stays
    with the rest of its file, so module fixtures are built once."""
    for item in items:
        engine = starts_engine(item)
        if engine and item.get_closest_marker("vllm") is None:
            item.add_marker(pytest.mark.vllm)
        _put_in_group(item, xdist_group(item, engine))

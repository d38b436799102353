"""A sampled completion depends only on its prompt, sampling settings and seed (issue 16 item 1).

Not on the batch it shares, on what the request cache already holds, on ``--limit``, or on the
batch size: the same sampled eval run three ways gives identical completions for shared prompts.
"""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmgen.backends import SamplingConfig, get_backend
from llmgen.evaluate import EvalConfig, run_eval

SAMPLED = dict(tasks=["arithmetic"], num_samples=3, temperature=0.9, top_p=0.95, max_new_tokens=6, seed=11)


def _responses(out) -> dict[str, list[str]]:
    return {r["prompt"]: r["responses"] for r in out["samples"]}


def _three_ways(backend, tmp_path: Path, model: str, backend_name: str) -> None:
    def run(limit: int, batch_size: int, cache: str | None):
        if backend_name == "hf":
            backend.batch_size = batch_size
        cfg = EvalConfig(model=model, backend=backend_name, limit=limit, batch_size=batch_size, cache=cache, **SAMPLED)
        return _responses(run_eval(cfg, backend=backend, show_progress=False))

    cache = str(tmp_path / f"{backend_name}.sqlite")
    empty = run(12, 4, None)
    run(5, 3, cache)  # part of the eval already cached ...
    partly_cached = run(12, 4, cache)  # ... then the whole eval
    other_limit = run(8, 16, None)
    assert len(empty) == 12 and len(other_limit) == 8
    assert partly_cached == empty
    assert other_limit == {p: empty[p] for p in other_limit}
    assert len({r for rs in empty.values() for r in rs}) > 12, "samples should differ"


def test_hf_completions_independent_of_batch_cache_and_limit(tiny_model_dir, tmp_path):
    backend = get_backend("hf", tiny_model_dir)
    _three_ways(backend, tmp_path, tiny_model_dir, "hf")


@pytest.mark.vllm
def test_vllm_completions_independent_of_batch_cache_and_limit(vllm_tiny, tmp_path):
    """The same four runs through vLLM, on the session's tiny engine (the model is not what is tested)."""
    _three_ways(vllm_tiny, tmp_path, vllm_tiny.model_path, "vllm")


def test_seeds_per_sample_and_per_request(tiny_model_dir):
    """Sample j of a prompt is the same alone or among others; another seed gives other samples."""
    backend = get_backend("hf", tiny_model_dir, batch_size=3)
    s = SamplingConfig(n=3, temperature=1.0, max_tokens=8, seed=4)
    prompts = ["abc", "a much longer prompt here", "xyz", "q"]
    together = backend.generate(prompts, s)
    alone = [backend.generate([p], s)[0] for p in prompts]
    assert [[c.token_ids for c in g] for g in together] == [[c.token_ids for c in g] for g in alone]
    mixed = backend.generate(prompts[:2], [s, SamplingConfig(max_tokens=8)])
    assert [c.token_ids for c in mixed[0]] == [c.token_ids for c in together[0]]
    assert mixed[1][0].token_ids == backend.generate([prompts[1]], SamplingConfig(max_tokens=8))[0][0].token_ids
    reseeded = backend.generate(prompts, SamplingConfig(n=3, temperature=1.0, max_tokens=8, seed=5))
    assert [[c.token_ids for c in g] for g in reseeded] != [[c.token_ids for c in g] for g in together]


def test_kill_9_then_resume_gives_the_uninterrupted_rows(tiny_model_dir, tmp_path, monkeypatch, capsys):
    """``llmgen eval`` killed (SIGKILL) after its first batch resumes with cache hits, same rows."""
    args = [sys.executable, "-m", "llmgen.cli.main", "eval", "--model", tiny_model_dir, "--tasks", "arithmetic",
            "--limit", "12", "--batch-size", "2", "--num-samples", "2", "--temperature", "0.8", "--max-tokens", "16",
            "--num-fewshot", "0"]
    env = {**os.environ, "LLMGEN_CACHE": str(tmp_path / "cache")}
    db = tmp_path / "cache" / "requests.sqlite"
    proc = subprocess.Popen(args + ["--output-dir", str(tmp_path / "killed")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    committed, deadline = 0, time.time() + 240
    while time.time() < deadline and proc.poll() is None and committed == 0:
        time.sleep(0.05)
        if db.exists():
            try:
                with sqlite3.connect(db, timeout=5) as con:
                    committed = con.execute("SELECT COUNT(*) FROM cache").fetchone()[0]
            except sqlite3.OperationalError:
                pass
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert 0 < committed < 12
    assert not (tmp_path / "killed" / "results.json").exists()
    # the resumed and the fresh run need no process of their own: they run here, on the same cache folders
    from llmgen.cli.main import main

    monkeypatch.setenv("LLMGEN_CACHE", str(tmp_path / "cache"))
    main(args[3:] + ["--output-dir", str(tmp_path / "resumed")])
    monkeypatch.setenv("LLMGEN_CACHE", str(tmp_path / "fresh"))
    main(args[3:] + ["--output-dir", str(tmp_path / "fresh_run")])
    capsys.readouterr()
    results = json.loads((tmp_path / "resumed" / "results.json").read_text())
    assert results["cache"]["hits"] >= committed
    assert (tmp_path / "resumed" / "samples.jsonl").read_text() == (tmp_path / "fresh_run" / "samples.jsonl").read_text()

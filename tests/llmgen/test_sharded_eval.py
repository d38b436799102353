"""``llmgen eval`` under torchrun: 2 CPU ranks (gloo) split the requests, rank 0 writes, the cache resumes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
TASKS = "arithmetic,sentiment"  # one generation task, one loglikelihood task


def _env(cache: Path) -> dict:
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
               LLMGEN_CACHE=str(cache))
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _args(model: str, out: Path, *extra: str) -> list[str]:
    # 7 examples: an odd count, so the two ranks get unequal slices
    return ["eval", "--model", model, "--tasks", TASKS, "--limit", "7", "--max-tokens", "6", "--batch-size", "3",
            "--output-dir", str(out), *extra]


def _read(out: Path) -> tuple[dict, list[dict]]:
    rows = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    return json.loads((out / "results.json").read_text()), rows


def _eval(prefix: list[str], model: str, out: Path, cache: Path, *extra: str) -> tuple[dict, list[dict], subprocess.CompletedProcess]:
    cmd = [*prefix, "-m", "llmgen.cli.main", *_args(model, out, *extra)]
    run = subprocess.run(cmd, capture_output=True, text=True, env=_env(cache), timeout=600, cwd=out.parent)
    assert run.returncode == 0, run.stderr[-3000:]
    return *_read(out), run


def test_two_rank_eval_equals_one_process_and_resumes(tmp_path, tiny_model_dir, monkeypatch, capsys):
    torchrun = shutil.which("torchrun", path=str(Path(PY).parent)) or shutil.which("torchrun")
    if torchrun is None or not torch.distributed.is_gloo_available():
        pytest.skip("torchrun or gloo not available")
    launch = [torchrun, "--nproc_per_node", "2", "--master_port", str(29000 + os.getpid() % 300)]
    # the one-process reference needs no process of its own: the CLI runs here
    from llmgen.cli.main import main

    monkeypatch.setenv("LLMGEN_CACHE", str(tmp_path / "c0"))
    main(_args(tiny_model_dir, tmp_path / "single", "--no-cache"))
    capsys.readouterr()
    single, single_rows = _read(tmp_path / "single")
    n_requests = single["cache"]["misses"]  # a disabled cache counts every request as a miss
    assert n_requests > 7

    cache = tmp_path / "shared-cache"
    sharded, rows, proc = _eval(launch, tiny_model_dir, tmp_path / "sharded", cache)
    assert sharded["backend"]["data_parallel_ranks"] == 2
    assert sharded["results"] == single["results"]
    assert len(rows) == len(single_rows) == 14
    for a, b in zip(rows, single_rows, strict=True):
        assert (a["task"], a["doc_id"], a["prompt"], a["responses"]) == (b["task"], b["doc_id"], b["prompt"],
                                                                         b["responses"])
        if "choice_logprobs" in b:
            assert a["choice_logprobs"] == pytest.approx(b["choice_logprobs"], abs=1e-5)
    # each request computed once, by one rank, and committed to the shared cache
    assert sharded["cache"] == {"hits": 0, "misses": n_requests, "path": str(cache / "requests.sqlite")}
    assert proc.stderr.count("wrote ") == 1  # rank 0 alone writes and says so (on stderr)
    assert not list((tmp_path / "sharded").glob(".*.tmp"))

    again, again_rows, _ = _eval(launch, tiny_model_dir, tmp_path / "again", cache)
    assert again["cache"]["hits"] == n_requests and again["cache"]["misses"] == 0  # resumed, nothing recomputed
    assert again["results"] == single["results"] and [r["responses"] for r in again_rows] == [
        r["responses"] for r in single_rows]

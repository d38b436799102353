"""Issue 27: nothing lost, nothing leaked, nothing run that was not asked for.

One test per item (1, 2, 3, 4, 5, 7, 10, 12, 13; item 11 is ``test_engine_processes.py``), each
through ``python -m llmgen.cli.main`` in a subprocess: the exit status, exactly one ``error:`` line,
the files on disk before and after compared byte for byte, no process left running. Each class is
tried beyond the issue's examples (every command that writes, every name that becomes a path).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from tests.cli.test_cli import LLMGEN, REPO, assert_one_error, error_lines, llmgen

# Every command that writes a run folder, with its output flag.
WRITERS = [
    ["eval", "--tasks", "arithmetic"], ["eval", "--tasks", "sentiment", "--formats", "2"],
    ["train", "--model", "default", "--data", "x.jsonl"], ["confidence-limiting"], ["hyperfitting"],
    ["npo-unlearning"], ["npo-unlearning", "--stage", "finetune"], ["format-spread"],
    ["instruction-diversity", "sweep"], ["instruction-diversity", "dataset", "a.jsonl"],
]


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` (links not followed) with its bytes."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(root))] = p.read_bytes()
    return out


def run_eval(model: str, out: Path, *extra: str, cache: Path | None = None, task: str = "arithmetic"):
    env = {"LLMGEN_CACHE": str(cache)} if cache else None
    return llmgen("eval", "--model", model, "--tasks", task, "--limit", "2", "--output-dir", str(out),
                  *([] if cache else ["--no-cache"]), *extra, env=env)


def strict_json(text: str):
    """JSON as a strict reader reads it: NaN/Infinity are errors."""
    def refuse(name):
        raise ValueError(f"non-JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


# --- item 1: no name leaves the folder it is written into -------------------------------------------

@pytest.mark.parametrize("name", ["../../victim", "x/../../../../victim", "/tmp/abs", "..", ".", "", "a/b",
                                  ".hidden", "-rf", "nul\x00byte", "é" * 200, "C:\\\\win\\\\path"])
def test_safe_filename_stays_inside(name, tmp_path):
    from llmgen.io import child_path, safe_filename

    got = safe_filename(name)
    assert got and "/" not in got and "\x00" not in got and got not in (".", "..") and not got.startswith(".")
    assert len(got) <= 100
    path = child_path(tmp_path, name, "inner", suffix=".json")
    assert tmp_path.resolve() in path.resolve().parents
    assert safe_filename("a/b") != safe_filename("a_b")  # no two names share a file
    assert safe_filename("sentiment") == "sentiment"  # safe names are kept as they are


def test_task_name_never_leaves_the_run_folder(tmp_path, tiny_model_dir):
    """A task file's ``name`` with ``../`` and ``--formats``: formats_<name>.json lands inside the run."""
    victim = tmp_path / "victim.json"
    victim.write_text("the user's\n")
    task = tmp_path / "t.yaml"
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"q": f"{i}+1", "a": str(i + 1)}) + "\n" for i in range(3)))
    task.write_text("name: 'x/../../../../" + str(victim.with_suffix("")).lstrip("/") + "'\ndata: d.jsonl\n"
                    "fields: [{descriptor: Question, field: q}]\noutput: Answer\ntarget: a\nmax_tokens: 4\n")
    before = snapshot(tmp_path)
    run = tmp_path / "run"
    r = llmgen("eval", "--model", tiny_model_dir, "--tasks", str(task), "--formats", "2", "--no-cache",
               "--output-dir", str(run))
    assert r.returncode == 0, r.stderr
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("run/")} == before  # nothing outside the run
    written = [k for k in after if k.startswith("run/formats_")]
    assert len(written) == 1 and "/" not in written[0][len("run/"):]


# --- item 2: outputs never overwrite inputs ---------------------------------------------------------

def test_outputs_never_overwrite_inputs(tmp_path, tiny_model_dir):
    a, b = tmp_path / "a", tmp_path / "b"
    assert run_eval(tiny_model_dir, a).returncode == 0
    shutil.copytree(a, b)
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    (tmp_path / "link.json").symlink_to(a / "results.json")  # a link to an input is that input
    before = snapshot(tmp_path)
    cases = [
        (["report", str(a), "-o", str(a / "results.json")], "is one of the inputs"),
        (["report", str(a), "-o", str(a / "results.json"), "--overwrite"], "is one of the inputs"),
        (["report", str(a), str(b), "-o", str(b / "samples.jsonl")], "is one of the inputs"),
        (["report", str(a), "-o", str(tmp_path / "link.json"), "--overwrite"], "is one of the inputs"),
        (["report", str(a), "-o", str(notes)], "exists; pass --overwrite"),
        (["compare", str(a), str(b), "--json", str(b / "results.json")], "is one of the inputs"),
        (["compare", str(a), str(b), "--json", str(a / "config.json"), "--overwrite"], "is one of the inputs"),
        (["compare", str(a), str(b), "--json", str(notes)], "exists; pass --overwrite"),
    ]
    for args, message in cases:
        assert_one_error(llmgen(*args), message)
        assert snapshot(tmp_path) == before, args
    r = llmgen("report", str(a), "-o", str(notes), "--overwrite")  # asked for: replaced
    assert r.returncode == 0, r.stderr
    assert notes.read_bytes().startswith(b"<!")
    r = llmgen("report", str(a), "-o", str(a / "report.html"))  # a new file beside the inputs is fine
    assert r.returncode == 0, r.stderr


# --- items 3 and 5: a folder of the user's files; --overwrite removes only what llmgen wrote --------

@pytest.mark.parametrize("overwrite", [False, True])
def test_a_folder_of_the_users_files_is_never_touched(overwrite, tmp_path):
    user = tmp_path / "mine"
    (user / "final").mkdir(parents=True)
    (user / "checkpoints").mkdir()
    (user / "config.json").write_text('{"mine": true}\n')
    (user / "final" / "paper.tex").write_text("\\documentclass{article}\n")
    (user / "checkpoints" / "notes.txt").write_text("notes\n")
    (tmp_path / "x.jsonl").write_text('{"text": "a"}\n')
    (tmp_path / "a.jsonl").write_text('{"instruction": "a"}\n')
    before = snapshot(tmp_path)
    for cmd in WRITERS:
        flag = "--output" if cmd == ["hyperfitting"] else "--output-dir"
        r = llmgen(*cmd, flag, str(user), *(["--overwrite"] if overwrite and cmd[0] in ("eval", "train") else []),
                   cwd=tmp_path)
        assert_one_error(r, "holds files llmgen did not write")
        assert snapshot(tmp_path) == before, cmd


def test_train_overwrite_keeps_the_users_files_in_a_run(tmp_path, tiny_model_dir):
    """A real run folder where the user later put files: --overwrite replaces the run, not them."""
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": f"line {i}"}) + "\n" for i in range(4)))
    run = tmp_path / "run"
    base = ["train", "--model", tiny_model_dir, "--data", str(data), "--output-dir", str(run), "--batch-size", "2",
            "--no-progress"]
    assert llmgen(*base, "--max-steps", "2", "--save-every", "1").returncode == 0
    (run / "final" / "paper.tex").write_text("mine\n")
    (run / "checkpoints" / "notes.txt").write_text("mine too\n")
    old = [p for p in (run / "checkpoints").iterdir() if p.name.startswith("step-")]
    assert old
    r = llmgen(*base, "--max-steps", "1", "--overwrite")
    assert r.returncode == 0, r.stderr
    assert (run / "final" / "paper.tex").read_text() == "mine\n"
    assert (run / "checkpoints" / "notes.txt").read_text() == "mine too\n"
    assert not any(p.exists() for p in old)  # the earlier run's checkpoints went
    assert json.loads((run / "results.json").read_text())["steps"] == 1


def test_overwrite_leaves_no_stale_files_for_compare(tmp_path, tiny_model_dir):
    """Item 5: a --formats run, then a plain rerun with --overwrite: the format files go, a user's file
    put in the run folder stays, and compare no longer sees formats."""
    run = tmp_path / "run"
    r = llmgen("eval", "--model", tiny_model_dir, "--tasks", "sentiment", "--limit", "4", "--formats", "2",
               "--no-cache", "--output-dir", str(run))
    assert r.returncode == 0, r.stderr
    assert (run / "format_samples.jsonl").is_file() and (run / "formats_sentiment.json").is_file()
    (run / "my_notes.md").write_text("mine\n")
    r = llmgen("eval", "--model", tiny_model_dir, "--tasks", "sentiment", "--limit", "4", "--no-cache",
               "--output-dir", str(run), "--overwrite")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in run.iterdir() if not p.name.startswith(".")) == \
        ["config.json", "my_notes.md", "results.json", "samples.jsonl"]
    assert (run / "my_notes.md").read_text() == "mine\n"
    from llmgen.analysis import has_formats

    assert not has_formats(run, "sentiment")


# --- item 4: two runs, one folder --------------------------------------------------------------------

def test_two_runs_into_one_folder(tmp_path, tiny_model_dir):
    """The second run into a held folder is refused in one line while the first runs; two runs
    sharing the request cache at once both finish, and the cache is whole."""
    cache = tmp_path / "cache"
    run, other = tmp_path / "run", tmp_path / "other"
    env = {**os.environ, "LLMGEN_CACHE": str(cache)}
    args = ["eval", "--model", tiny_model_dir, "--tasks", "arithmetic", "--limit", "6", "--max-tokens", "32",
            "--batch-size", "1"]
    first = subprocess.Popen(LLMGEN + args + ["--output-dir", str(run)], cwd=REPO, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while not (run / ".llmgen-run.json").exists() and time.time() < deadline:
            time.sleep(0.1)
        assert first.poll() is None
        second = llmgen(*args, "--output-dir", str(run), "--overwrite", env={"LLMGEN_CACHE": str(cache)})
        assert_one_error(second, "is in use by another llmgen run")
        third = subprocess.run(LLMGEN + args + ["--output-dir", str(other)], cwd=REPO, env=env, text=True,
                               capture_output=True, timeout=600)
        out, err = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err
    assert third.returncode == 0, third.stderr
    assert strict_json((run / "results.json").read_text())["n_samples"] == {"arithmetic": 6}
    db = sqlite3.connect(cache / "requests.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("SELECT COUNT(*) FROM cache").fetchone()[0] == 6  # one entry per request, not two
    for row in db.execute("SELECT value FROM cache"):
        json.loads(row[0])


# --- item 7: custom model code runs only when asked -------------------------------------------------

@pytest.mark.parametrize("where", ["config.json", "tokenizer_config.json"])
def test_custom_model_code_is_never_run_unasked(where, tmp_path, tiny_model_dir):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    marker = tmp_path / "RAN"
    (model / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n"
                                   "from transformers import LlamaConfig as EvilConfig\n")
    cfg = json.loads((model / where).read_text()) if (model / where).is_file() else {}
    cfg["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoTokenizer": ["evil.EvilConfig", None]}
    (model / where).write_text(json.dumps(cfg))
    (tmp_path / "d.jsonl").write_text('{"text": "a b c"}\n')
    before = snapshot(tmp_path)
    for cmd in (["eval", "--model", str(model), "--tasks", "arithmetic"],
                ["eval", "--model", str(model), "--backend", "vllm", "--tasks", "arithmetic"],
                ["train", "--model", str(model), "--data", str(tmp_path / "d.jsonl")],
                ["hyperfitting", f"model={model}"], ["confidence-limiting", f"model={model}"]):
        proc = subprocess.run(LLMGEN + cmd + ["--output-dir" if cmd[0] != "hyperfitting" else "--output",
                                              str(tmp_path / "run")],
                              input="y\ny\n", capture_output=True, text=True, cwd=REPO, timeout=300)
        assert_one_error(proc, f"model folder {model} asks to run its own code (auto_map in {where})")
        assert "[y/N]" not in proc.stdout + proc.stderr  # transformers never asked
        assert not marker.exists() and snapshot(tmp_path) == before, cmd


def test_load_model_never_asks_on_stdin(tmp_path, tiny_model_dir):
    """The library path too: an explicit trust_remote_code=False, never None (transformers' prompt)."""
    from llmgen.errors import LlmgenError
    from llmgen.models import load_model

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    cfg = json.loads((model / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "evil.EvilConfig"}
    (model / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(LlmgenError, match="asks to run its own code"):
        load_model(str(model))


# --- item 10: a damaged cache ----------------------------------------------------------------------

def test_damaged_cache(tmp_path, tiny_model_dir):
    """Random bytes: moved aside with one warning, the run goes on with a fresh cache; a cache folder
    that is a file or cannot be created: one error line before the model loads, nothing written."""
    cache = tmp_path / "cache"
    cache.mkdir()
    junk = os.urandom(8192)
    (cache / "requests.sqlite").write_bytes(junk)
    r = run_eval(tiny_model_dir, tmp_path / "run", cache=cache)
    assert r.returncode == 0, r.stderr
    warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:") and "damaged" in ln]
    assert len(warnings) == 1 and not error_lines(r.stderr), r.stderr
    aside = [p for p in cache.iterdir() if p.name.startswith("requests.sqlite.corrupt-")]
    assert len(aside) == 1 and aside[0].read_bytes() == junk  # kept, not deleted
    assert sqlite3.connect(cache / "requests.sqlite").execute("SELECT COUNT(*) FROM cache").fetchone()[0] == 2

    blocker = tmp_path / "blocker"
    blocker.write_text("keep\n")
    for where, message in ((blocker, "is a file"), (Path("/proc/self/llmgen-cache"), "cannot create")):
        before = snapshot(tmp_path)
        r = run_eval(tiny_model_dir, tmp_path / "run2", cache=where)
        assert_one_error(r, message)
        assert snapshot(tmp_path) == before


def test_truncated_cache_is_moved_aside(tmp_path):
    from llmgen.cache import RequestCache, check_cache

    path = tmp_path / "requests.sqlite"
    c = RequestCache(path)
    c.put_many({f"k{i}": {"v": "x" * 500} for i in range(400)})
    c.close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    check_cache(path)  # no exception: moved aside, a fresh one in its place
    assert any(p.name.startswith("requests.sqlite.corrupt-") for p in tmp_path.iterdir())
    assert len(RequestCache(path)) == 0


# --- item 12: every check that needs no model runs before the model loads ----------------------------

def test_late_checks_come_first(tmp_path, tiny_model_dir):
    tofu = tmp_path / "tofu"
    tofu.mkdir()  # a TOFU folder without its files
    (tmp_path / "d.jsonl").write_text('{"text": "a"}\n')
    m = ["--model", tiny_model_dir]
    cases = [
        (["eval", *m, "--seed", "-1"], "--seed must be an integer in [0, 2**32)"),
        (["eval", *m, "--seed", str(2**32)], "--seed must be an integer"),
        (["eval", *m, "--model-args", "dtype=float7"], "unknown dtype 'float7'"),
        (["eval", *m, "--backend", "vllm", "--model-args", "dtype=float7"], "unknown dtype 'float7'"),
        (["eval", *m, "--model-args", "adapter=/missing"], "adapter folder not found: /missing"),
        (["eval", *m, "--model-args", f"adapter={tmp_path}"], "adapter folder has no adapter_config.json"),
        (["eval", *m, "--tasks", "lmeval:llmgen_capitals_mc", "--include-path", str(REPO / "docs/examples/tasks/lmeval"),
          "--num-fewshot", "500"], "--num-fewshot 500: lm-eval task 'llmgen_capitals_mc' has"),
        (["train", *m, "--data", str(tmp_path / "d.jsonl"), "seed=-3"], "seed must be an integer"),
        (["train", *m, "--data", str(tmp_path / "d.jsonl"), "model_dtype=float7"], "unknown dtype 'float7'"),
        (["train", *m, "--data", str(tmp_path / "d.jsonl"), "ref_device=tpu9"], "unknown device 'tpu9'"),
        (["hyperfitting", f"model={tiny_model_dir}", "device=gpu0"], "device: unknown device 'gpu0'"),
        (["hyperfitting", f"model={tiny_model_dir}", "device=cuda:7"], "is not available"),
        (["confidence-limiting", f"model={tiny_model_dir}", "train.seed=-1"], "train.seed must be an integer"),
        (["instruction-diversity", "sweep", "seeds=[0,-1]"], "seeds must be an integer"),
        (["format-spread", f"model={tiny_model_dir}", "seed=-2"], "seed must be an integer"),
        (["npo-unlearning", "--stage", "retain-logs", f"model={tiny_model_dir}", f"data={tofu}",
          f"retain_logs={tmp_path / 'logs.json'}"], "forget"),
    ]
    for args, message in cases:
        before = snapshot(tmp_path)
        t0 = time.time()
        r = llmgen(*args, "--output" if args[0] == "hyperfitting" else "--output-dir", str(tmp_path / "run"))
        assert_one_error(r, message)
        assert snapshot(tmp_path) == before, args
        assert time.time() - t0 < 60, args  # before any fine-tuning or model load


# --- item 13: NaN and Infinity ---------------------------------------------------------------------

def test_non_finite_numbers_refused_and_never_written(tmp_path, tiny_model_dir):
    before = snapshot(tmp_path)
    m = ["--model", tiny_model_dir, "--output-dir", str(tmp_path / "bad")]
    for args, message in [
        (["eval", *m, "--temperature", "nan"], "--temperature must be a finite number"),
        (["eval", *m, "--top-p", "inf"], "--top-p must be a finite number"),
        (["eval", *m, "--temperature", "-inf"], "must be"),
        (["eval", *m, "--model-args", '{"max_model_len": NaN}'], "NaN is not a number JSON can hold"),
        (["eval", *m, "--model-args", "gpu_memory_utilization=Infinity"], "Infinity is not a number"),
        (["train", "--model", tiny_model_dir, "--data", "x.jsonl", "lr=.nan"], "lr must be a finite number"),
        (["train", "--model", tiny_model_dir, "--data", "x.jsonl", "--loss-arg", "beta=.inf"], "must be a finite number"),
        (["hyperfitting", "train.lr=nan"], "train.lr must be a finite number"),
        (["confidence-limiting", "dco_threshold=-.inf"], "must be a finite number"),
    ]:
        assert_one_error(llmgen(*args), message)
        assert snapshot(tmp_path) == before, args
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  lr: .nan\n")
    assert_one_error(llmgen("hyperfitting", "--config", str(cfg)), "train.lr must be a finite number")

    run = tmp_path / "run"  # one example: its standard error is undefined, written as null
    r = llmgen("eval", "--model", tiny_model_dir, "--tasks", "arithmetic", "--limit", "1", "--no-cache",
               "--output-dir", str(run))
    assert r.returncode == 0, r.stderr
    results = strict_json((run / "results.json").read_text())
    for line in (run / "samples.jsonl").read_text().splitlines():
        strict_json(line)
    stderrs = [u["stderr"] for task in results["uncertainty"].values() for u in task.values()]
    assert stderrs and all(s is None for s in stderrs)


def test_atomic_json_writer_writes_null_for_non_finite(tmp_path):
    import numpy as np

    from llmgen.io import atomic_write_json

    atomic_write_json(tmp_path / "x.json", {"a": float("nan"), "b": [float("inf"), 1.5], "c": np.array([np.nan, 2.0]),
                                            "d": np.float64("-inf")})
    assert strict_json((tmp_path / "x.json").read_text()) == {"a": None, "b": [None, 1.5], "c": [None, 2.0], "d": None}


def test_no_process_left(tmp_path):
    """After the commands above (one pytest process), no llmgen child of this process remains."""
    left = [p for p in psutil.Process().children(recursive=True) if "llmgen" in " ".join(p.cmdline())]
    assert not left

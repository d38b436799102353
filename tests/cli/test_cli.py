"""The command line as a user meets it: usage errors, bad input, Ctrl-C, output folders, help,
quiet engines, the README's examples. Every case runs ``llmgen`` in a subprocess and checks the
exit status, exactly one error line, no traceback and that nothing was written."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LLMGEN = [sys.executable, "-m", "llmgen.cli.main"]


def llmgen(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 600):
    return subprocess.run(LLMGEN + list(args), capture_output=True, text=True, cwd=cwd or REPO,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.lower().startswith("error:")]


def assert_one_error(r, message: str, status: int = 2) -> None:
    assert r.returncode == status, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    errors = error_lines(r.stderr)
    assert len(errors) == 1 and message in errors[0], r.stderr


# --- item 4: usage errors keep click's message and exit 2 -------------------------------------------

@pytest.mark.parametrize("args,message", [
    (["--limti"], "No such option: --limti"),
    (["evaluate"], "No such command 'evaluate'"),
    (["eval", "--limti", "3"], "No such option: --limti"),
    (["eval", "--limit", "abc"], "Invalid value for '--limit'"),
])
def test_usage_errors(args, message):
    r = llmgen(*args)
    assert_one_error(r, message)
    assert "Usage: llmgen" in r.stderr and r.stdout == ""


@pytest.mark.parametrize("args,message", [
    (["train", "--data", "x.jsonl"], "llmgen train needs model (--model or model=... or in --config)"),
    (["train", "--model", "default", "--data", "x.jsonl", "--lrr", "1"], "unknown option '--lrr'"),
    (["train", "--model", "default", "--data", "x.jsonl", "lrr=1"], "unknown config key 'lrr'; did you mean 'lr'?"),
    (["train", "--model", "default", "--data", "x.jsonl", "lr=abc"], "lr: expected float, got 'abc'"),
    (["npo-unlearning", "lr=1e-3"], "unknown config key 'lr'; did you mean 'train.lr'?"),
    (["npo-unlearning", "train.loss=ga"], "train.loss: set by the UnlearnConfig recipe itself"),
    (["confidence-limiting", "--config", "missing.yaml"], "config file not found: missing.yaml"),
    (["hyperfitting", "stray"], "unexpected argument 'stray'"),
])
def test_config_errors_are_one_line(args, message, tmp_path):
    r = llmgen(*args, "--output-dir" if args[0] != "hyperfitting" else "--output", str(tmp_path / "run"))
    assert_one_error(r, message)
    assert not (tmp_path / "run").exists()


def test_bare_command_prints_help_and_exits_2():
    r = llmgen()
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "Usage: llmgen" in r.stderr and "eval" in r.stderr


# --- items 2, 5, 6: bad values, output folders, bad files ------------------------------------------

def _no_tokenizer_model(tmp_path: Path, tiny_model_dir: str) -> str:
    folder = tmp_path / "no_tok"
    folder.mkdir()
    for f in Path(tiny_model_dir).iterdir():
        if not f.name.startswith(("tokenizer", "special_tokens")):
            shutil.copy(f, folder / f.name)
    return str(folder)


def _truncated_gguf(tmp_path: Path) -> str:
    from llmgen.models import embedded_gguf_path

    path = tmp_path / "cut.gguf"
    with embedded_gguf_path().open("rb") as f:
        path.write_bytes(f.read(4 << 20))
    return str(path)


@pytest.mark.parametrize("case", ["num_fewshot", "max_tokens", "twice", "model_args", "no_tokenizer",
                                  "not_utf8", "not_gguf", "truncated_gguf"])
def test_eval_bad_input(case, tmp_path, tiny_model_dir):
    cache = tmp_path / "cache"
    if case == "not_utf8":
        (tmp_path / "t.jsonl").write_bytes(b'{"prompt": "a", "target": "b"}\n{"prompt": "caf\xe9", "target": "c"}\n')
    if case == "not_gguf":
        (tmp_path / "m.gguf").write_text("not a model\n")
    args, message = {
        "num_fewshot": (["--num-fewshot", "-2"], "--num-fewshot must be >= 0, got -2"),
        "max_tokens": (["--max-tokens", "0"], "--max-tokens must be >= 1, got 0"),
        "twice": (["--tasks", "arithmetic,arithmetic"], "--tasks names 'arithmetic' twice"),
        "model_args": (["--model", tiny_model_dir, "--model-args", "foo=bar"], "has no argument 'foo'"),
        "no_tokenizer": (["--model", _no_tokenizer_model(tmp_path, tiny_model_dir)], "has no tokenizer"),
        "not_utf8": (["--tasks", str(tmp_path / "t.jsonl")], "t.jsonl line 2 is not UTF-8 text"),
        "not_gguf": (["--model", str(tmp_path / "m.gguf")], "is not a GGUF file"),
        "truncated_gguf": (["--model", _truncated_gguf(tmp_path)], "is truncated or corrupt"),
    }[case]
    r = llmgen("eval", *args, "--output-dir", str(tmp_path / "run"), env={"LLMGEN_CACHE": str(cache)})
    assert_one_error(r, message)
    assert not (tmp_path / "run").exists()
    assert not [p for p in cache.rglob("*") if p.suffix == ".lock" or p.name.endswith(".tmp")]
    assert not (cache / "models").exists() or not any((cache / "models").iterdir())


def test_vllm_model_args_checked_against_engine_arguments():
    from llmgen.errors import LlmgenError
    from llmgen.evaluate import check_backend_args

    check_backend_args("vllm", {"enforce_eager": True, "max_model_len": 512})  # real engine arguments pass
    with pytest.raises(LlmgenError, match="the vllm backend has no argument 'max_model_length'"):
        check_backend_args("vllm", {"max_model_length": 512})


@pytest.mark.parametrize("where", ["is_file", "below_file"])
def test_output_dir_that_cannot_be_a_folder(where, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("keep me\n")
    out = blocker if where == "is_file" else blocker / "run"
    for cmd in (["eval", "--tasks", "arithmetic"], ["train", "--model", "default", "--data", "x.jsonl"],
                ["confidence-limiting"], ["hyperfitting"], ["npo-unlearning"], ["format-spread"],
                ["instruction-diversity", "sweep"]):
        flag = "--output" if cmd == ["hyperfitting"] else "--output-dir"
        r = llmgen(*cmd, flag, str(out))
        assert_one_error(r, "is a file")
        assert blocker.read_text() == "keep me\n"


def test_finished_eval_run_needs_overwrite(tmp_path, tiny_model_dir):
    """A run folder with results.json holds a finished run: refused without --overwrite. A killed run
    (no results.json yet) is simply rerun into its folder (the request cache resumes it)."""
    run = tmp_path / "run"
    args = ["eval", "--model", tiny_model_dir, "--tasks", "arithmetic", "--limit", "2", "--no-cache",
            "--output-dir", str(run)]
    r = llmgen(*args, "--limit", "1")
    assert r.returncode == 0, r.stderr
    before = (run / "results.json").read_text()
    r = llmgen(*args)
    assert_one_error(r, "is not empty (holds results.json); pass --overwrite")
    assert (run / "results.json").read_text() == before
    r = llmgen(*args, "--overwrite")
    assert r.returncode == 0, r.stderr
    assert json.loads((run / "results.json").read_text())["n_samples"] == {"arithmetic": 2}
    (run / "results.json").unlink()  # as if killed before the end
    r = llmgen(*args)
    assert r.returncode == 0, r.stderr
    assert (run / "results.json").is_file()


def test_check_output_dir(tmp_path):
    from llmgen.errors import LlmgenError
    from llmgen.io import RUN_MARKER, check_output_dir

    assert check_output_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert not (tmp_path / "a").exists()  # checks only, creates nothing
    (tmp_path / "empty").mkdir()
    check_output_dir(tmp_path / "empty")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / ".hidden").write_text("")
    for overwrite in (False, True):  # no marker: the user's folder, refused whatever the flag
        with pytest.raises(LlmgenError, match=r"holds files llmgen did not write \(\.hidden\)"):
            check_output_dir(tmp_path / "full", overwrite=overwrite)
    (tmp_path / "full" / ".hidden").unlink()
    (tmp_path / "full" / RUN_MARKER).write_text(json.dumps({"files": ["samples.jsonl"]}))
    (tmp_path / "full" / "samples.jsonl").write_text("")
    with pytest.raises(LlmgenError, match="not empty"):
        check_output_dir(tmp_path / "full")
    assert check_output_dir(tmp_path / "full", overwrite=True) == tmp_path / "full"
    check_output_dir(tmp_path / "full", run_files=("results.json",))  # only these mark a finished run
    (tmp_path / "full" / RUN_MARKER).write_text(json.dumps({"files": ["samples.jsonl", "results.json"]}))
    (tmp_path / "full" / "results.json").write_text("")
    with pytest.raises(LlmgenError, match=r"holds results\.json"):
        check_output_dir(tmp_path / "full", run_files=("results.json",))


# --- item 2: train --resume with a changed setting; reruns need --overwrite ------------------------

def test_train_resume_and_rerun_rules(tmp_path, tiny_model_dir):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"{i}+1=", "answer": str(i + 1)}) + "\n" for i in range(8)))
    run = tmp_path / "run"
    base = ["train", "--model", tiny_model_dir, "--data", str(data), "--output-dir", str(run), "--max-steps", "3",
            "--save-every", "1", "--batch-size", "4", "--no-progress"]
    r = llmgen(*base)
    assert r.returncode == 0, r.stderr
    before = (run / "results.json").read_text()

    r = llmgen(*base, "--resume", "--lr", "1e-3")
    assert_one_error(r, "cannot resume: checkpoint has lr=5e-05, config has 0.001")
    r = llmgen(*base)
    assert_one_error(r, "is not empty")
    assert (run / "results.json").read_text() == before and (run / "final").is_dir()
    assert [p.name for p in (run / "checkpoints").iterdir()] != []

    r = llmgen(*base, "--overwrite", "--max-steps", "2", "--save-every", "0")
    assert r.returncode == 0, r.stderr
    assert json.loads((run / "results.json").read_text())["steps"] == 2
    assert not (run / "checkpoints").exists()  # the old run's checkpoints went with it


def test_train_without_output_dir_gets_a_fresh_run_folder(tmp_path, tiny_model_dir):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": f"line {i}"}) + "\n" for i in range(4)))
    r = llmgen("train", "--model", tiny_model_dir, "--data", str(data), "--max-steps", "1", "--no-progress",
               "--no-save-final", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    folders = list((tmp_path / "runs").iterdir())
    assert len(folders) == 1 and re.fullmatch(r"train-\d{8}-\d{6}", folders[0].name)
    assert f"run folder: runs/{folders[0].name}" in r.stderr and (folders[0] / "results.json").is_file()


# --- item 3: Ctrl-C ---------------------------------------------------------------------------------

def test_ctrl_c_exits_130_with_one_line(tmp_path, tiny_model_dir):
    cache = tmp_path / "cache"
    run = tmp_path / "run"
    err = (tmp_path / "stderr").open("w")
    proc = subprocess.Popen(LLMGEN + ["eval", "--model", tiny_model_dir, "--tasks", "arithmetic", "--max-tokens", "64",
                                      "--batch-size", "1", "--output-dir", str(run)],
                            stdout=subprocess.PIPE, stderr=err, text=True,
                            env={**os.environ, "LLMGEN_CACHE": str(cache)},
                            # a shell's background job (nohup, `&`, some CI runners) starts with SIGINT ignored, and
                            # Python then installs no KeyboardInterrupt handler: give the child the default disposition
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while not (cache / "requests.sqlite").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)  # the cache opens once the model is loaded: the run is under way
    time.sleep(1.0)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    try:
        stdout, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()  # never leave the run behind when the assertion above or the timeout fails
    err.close()
    stderr = (tmp_path / "stderr").read_text()
    assert proc.returncode == 130, stderr
    assert error_lines(stderr) == ["error: interrupted"] and "Traceback" not in stderr
    assert stdout == "" and not run.exists()


# --- item 9: help text everywhere, names never cut, the cache is an option -------------------------

def _commands():
    import typer.main

    from llmgen.cli.main import app

    group = typer.main.get_command(app)
    return group, group.commands


def test_every_option_has_help():
    group, commands = _commands()
    missing = [f"llmgen {name} {p.opts[0]}" for name, cmd in [("", group), *commands.items()]
               for p in cmd.params if not getattr(p, "help", None) and p.name != "help"]
    assert missing == []


def test_global_help_shows_cache_dir_and_verbose():
    r = llmgen("--help")
    assert r.returncode == 0
    assert "--cache-dir" in r.stdout and "LLMGEN_CACHE" in r.stdout and "--verbose" in r.stdout


# Recipe commands: (command path, module with FLAGS, config class).
CONFIG_COMMANDS = [
    (["train"], "llmgen.cli.train", "llmgen.training.config:TrainConfig"),
    (["npo-unlearning"], "llmgen.cli.npo_unlearning", "llmgen.recipes.npo_unlearning:UnlearnConfig"),
    (["confidence-limiting"], "llmgen.cli.confidence_limiting", "llmgen.recipes.confidence_limiting:ConfidenceLimitingConfig"),
    (["hyperfitting"], "llmgen.cli.hyperfitting", "llmgen.recipes.hyperfitting:HyperfittingConfig"),
    (["format-spread"], "llmgen.cli.format_spread", "llmgen.recipes.format_spread:FormatSpreadConfig"),
    (["instruction-diversity", "sweep"], "llmgen.cli.instruction_diversity", "llmgen.recipes.instruction_diversity:SweepConfig"),
    (["instruction-diversity", "dataset"], "llmgen.cli.instruction_diversity", "llmgen.recipes.instruction_diversity:DatasetDiversityConfig"),
]


def _load(target: str):
    import importlib

    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("path, module, target", CONFIG_COMMANDS, ids=lambda v: v if isinstance(v, str) else None)
def test_recipe_flags_map_to_config_keys_and_help_lists_every_key(path, module, target):
    """Issue 13 item 5: each shortcut flag names exactly one existing config key, and ``--help``
    lists every key with its default, so no field is unreachable."""
    import importlib

    from llmgen.cli.config_args import flag_keys
    from llmgen.config import config_keys

    cls = _load(target)
    keys = {k for k, _, _ in config_keys(cls)}
    mod = importlib.import_module(module)
    flags = getattr(mod, "SWEEP_FLAGS" if path[-1] == "sweep" else "DATASET_FLAGS" if path[-1] == "dataset"
                    else "FLAGS")
    fixed = set(getattr(cls, "FIXED_KEYS", ()))
    for flag, key in flag_keys(flags).items():
        assert key in keys and key not in fixed, (flag, key)
    r = llmgen(*path, "--help")
    assert r.returncode == 0, r.stderr
    for key, _, default in config_keys(cls):
        if key not in fixed:
            assert re.search(rf"^\s+{re.escape(key)}\s+{re.escape(json.dumps(default))}\s", r.stdout, re.M), key
    for flag in flags:
        assert flag in r.stdout


def test_eval_reaches_every_config_field():
    """No EvalConfig field is unreachable from ``llmgen eval`` (issue 13 item 5)."""
    from llmgen.evaluate import EvalConfig

    _, commands = _commands()
    eval_opts = {p.name for p in commands["eval"].params}
    renamed = {"ks": "k", "cache": "no_cache", "max_new_tokens": "max_tokens"}
    assert {renamed.get(f.name, f.name) for f in dataclasses.fields(EvalConfig)} - eval_opts == set()


# one value each flag's field refuses, and the error line the field's check gives for it
BAD_SETTING = {"backend": ("tpu", "unknown backend 'tpu'"), "max_new_tokens": ("0", "must be >= 1, got 0"),
               "num_samples": ("0", "must be >= 1, got 0"), "temperature": ("-1", "must be >= 0, got -1.0"),
               "top_p": ("2", "must be in (0, 1], got 2.0"), "limit": ("0", "must be >= 1, got 0"),
               "batch_size": ("0", "must be >= 1, got 0")}


def test_eval_reaches_every_eval_settings_field(tmp_path, capsys):
    """Every field of the shared ``EvalSettings`` (recipes' ``eval:``, which ``EvalConfig`` extends)
    is a ``llmgen eval`` flag with the field's default, and the flag's value lands in that field (a
    bad value gets the field's own error line, naming the flag), or the field is listed in
    ``evaluate.NO_FLAG`` with a reason: a new field cannot be silently unreachable (issue 13 item 5)."""
    from llmgen.cli.main import main
    from llmgen.config import EvalSettings
    from llmgen.evaluate import NO_FLAG, flag_of

    _, commands = _commands()
    params = {opt: p for p in commands["eval"].params for opt in p.opts}
    names = [f.name for f in dataclasses.fields(EvalSettings)]
    assert set(NO_FLAG) <= set(names) and all(NO_FLAG.values())
    for f in dataclasses.fields(EvalSettings):
        if f.name in NO_FLAG:
            continue
        flag = flag_of(f.name)
        assert flag in params, (f.name, flag)
        assert params[flag].default == f.default, (f.name, params[flag].default, f.default)
        value, message = BAD_SETTING[f.name]  # a new field needs a case here too
        with pytest.raises(SystemExit) as exit_info:
            main(["eval", flag, value, "--tasks", "no_such_task", "--output-dir", str(tmp_path / f.name)])
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert exit_info.value.code == 2 and err.startswith("error: ") and message in err, (f.name, err)
        assert f.name == "backend" or err == f"error: {flag} {message}", err
        assert not (tmp_path / f.name).exists()


def test_run_folder_config_json_round_trips(tmp_path):
    """A run folder's config.json (``dump_config``) passed back as ``--config`` gives the same config."""
    from llmgen.cli.config_args import config_options
    from llmgen.cli.npo_unlearning import FLAGS
    from llmgen.config import dump_config
    from llmgen.recipes.npo_unlearning import UnlearnConfig

    cfg = config_options(UnlearnConfig, None, ["--method", "ga,npo_rt", "train.lr=3e-4", "--steps", "5",
                                               "eval.limit=7", "method_args.npo_rt.beta=0.2", "train.adam_betas=[0.8, 0.9]"], FLAGS)
    assert cfg.methods == ["ga", "npo_rt"] and cfg.train.max_steps == 5 and cfg.train.adam_betas == (0.8, 0.9)
    assert cfg.method_args == {"npo_rt": {"beta": 0.2}} and cfg.args_of("npo_rt")["beta"] == 0.2
    path = tmp_path / "config.json"
    path.write_text(json.dumps(dump_config(cfg)))
    assert config_options(UnlearnConfig, path, [], FLAGS) == cfg
    assert config_options(UnlearnConfig, path, ["train.lr=1e-5"], FLAGS).train.lr == 1e-5


def test_task_names_are_never_cut():
    from llmgen.tasks import list_tasks

    r = llmgen("tasks", env={"COLUMNS": "60"})
    assert r.returncode == 0, r.stderr
    first_words = {line.split()[0] for line in r.stdout.splitlines() if line.strip()}
    assert set(list_tasks()) <= first_words


# --- item 10: `models` is read-only; conversion on first use says so -------------------------------

def test_models_is_read_only_and_shows_the_conversion_state(tmp_path, default_model_dir):
    """`llmgen models` on an empty cache converts and writes nothing; on a converted one (the suite's
    own) it shows the folder without the "not converted yet" note. The conversion itself, its
    progress line and its lock: tests/llmgen/test_models.py::test_killed_conversion_leaves_no_broken_folder."""
    cache = tmp_path / "cache"
    r = llmgen("--cache-dir", str(cache), "models")
    assert r.returncode == 0, r.stderr
    target = cache / "models" / "smollm2-135m-instruct"
    assert f"default resolves to: {target} (not converted yet" in r.stdout
    assert not cache.exists() or not any(cache.rglob("*"))  # nothing converted, nothing written
    converted = Path(default_model_dir)
    r = llmgen("--cache-dir", str(converted.parent.parent), "models")
    assert r.returncode == 0, r.stderr
    assert f"default resolves to: {converted}\n" in r.stdout


# --- item 11: a run with no --output-dir is saved under runs/ --------------------------------------

def test_eval_without_output_dir_saves_under_runs(tmp_path, tiny_model_dir):
    task = REPO / "docs" / "examples" / "capitals.yaml"
    r = llmgen("eval", "--model", tiny_model_dir, "--tasks", f"arithmetic,{task}", "--limit", "2", "--no-cache",
               cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (folder,) = (tmp_path / "runs").iterdir()
    assert re.fullmatch(r"arithmetic\+capitals-\d{8}-\d{6}", folder.name)
    assert f"wrote runs/{folder.name}/results.json" in r.stderr
    assert set(json.loads((folder / "results.json").read_text())["results"]) == {"arithmetic", "capitals"}


# --- item 12: the README's examples work as pasted ---------------------------------------------------

def _readme_block(heading: str) -> list[str]:
    text = (REPO / "README.md").read_text()
    block = text.split(f"## {heading}", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    joined = block.replace("\\\n", " ")
    return [line.split("#", 1)[0].strip() for line in joined.splitlines() if line.split("#", 1)[0].strip()]


def test_readme_setup_is_two_commands():
    assert _readme_block("Set-up") == ["make run", "make test"]


def test_readme_commands_exist_and_example_files_are_shipped():
    _, commands = _commands()
    lines = [shlex.split(line) for line in _readme_block("Using it") if line.startswith("llmgen")]
    assert {words[1] for words in lines} <= set(commands)
    shipped = [f for words in lines for w in words for f in w.split(",") if f.startswith("docs/")]
    assert shipped and all((REPO / f).is_file() for f in shipped)


def _chat_tiny_model(tmp_path: Path, tiny_model_dir: str) -> str:
    """The tiny model with a minimal chat template, for the README's --apply-chat-template line."""
    from transformers import AutoTokenizer

    folder = tmp_path / "chat_tiny"
    shutil.copytree(tiny_model_dir, folder)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = "{% for m in messages %}User: {{ m['content'] }}\n{% endfor %}Assistant:"
    tok.save_pretrained(folder)
    return str(folder)


def test_readme_example_tasks_run_on_the_tiny_model(tmp_path, tiny_model_dir):
    model = _chat_tiny_model(tmp_path, tiny_model_dir)
    lines = [shlex.split(line) for line in _readme_block("Using it") if "docs/examples/" in line]
    assert len(lines) == 2
    for i, words in enumerate(lines):
        out = tmp_path / f"run{i}"
        r = llmgen(*words[1:], "--model", model, "--no-cache", "--output-dir", str(out))
        assert r.returncode == 0, r.stderr
        results = json.loads((out / "results.json").read_text())
        tasks = [Path(t).stem for w in words if w.startswith("docs/") for t in w.split(",")]
        assert list(results["n_samples"]) == tasks
        assert all(n > 0 for n in results["n_samples"].values())


# --- item 7: vLLM quiet unless --verbose ------------------------------------------------------------
# Checked on `make run`'s own command (the embedded model on vLLM, in a fresh `llmgen` process):
# tests/llmgen/backends/test_vllm_paths.py::test_make_run_command_writes_its_results asserts stdout is only the
# results table and stderr has no INFO/WARNING line. One vLLM subprocess serves both checks.


# --- compare/report: bad output paths are caught before the work ----------------------------------

@pytest.mark.parametrize("case", ["report_below_file", "report_is_folder", "compare_json_below_file", "confidence"])
def test_analysis_bad_output(case, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    runs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text("{}\n")
        runs.append(str(tmp_path / name))
    args, message = {
        "report_below_file": (["report", *runs, "-o", str(blocker / "r.html")], "is a file"),
        "report_is_folder": (["report", *runs, "-o", str(tmp_path / "a")], "is a folder"),
        "compare_json_below_file": (["compare", *runs, "--json", str(blocker / "c.json")], "is a file"),
        "confidence": (["compare", *runs, "--confidence", "95"], "--confidence must be between 0 and 1"),
    }[case]
    assert_one_error(llmgen(*args), message)


def test_atomic_write_names_the_path_it_cannot_write(tmp_path):
    from llmgen.errors import LlmgenError
    from llmgen.io import atomic_write_json

    (tmp_path / "f").write_text("")
    with pytest.raises(LlmgenError, match=r"cannot write .*f/x\.json"):
        atomic_write_json(tmp_path / "f" / "x.json", {})
    with pytest.raises(LlmgenError, match="cannot write"):
        atomic_write_json(tmp_path, {})

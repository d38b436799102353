"""The vLLM paths of the recipes, each against the HF backend on the same inputs: ``--formats``,
FormatSpread, the unlearning evaluator (save, merge LoRA, start an engine), passn's evaluation,
retain-log creation, and ``make run`` itself.

Agreement, not only that it ran: scores (log-probabilities, truth ratios, confidences) within
``TOL`` in float32 and identical greedy text. The session's engine on the tiny model
(``vllm_tiny``, tests/conftest.py) serves the first tests and the retain logs' own backend; the
recipes that save a model start their own (on the saved copy), and ``make run`` starts the
embedded model's in a subprocess. Every test here starts an engine: the conftest hook marks them
``vllm`` (``make run``'s is marked by hand: its command comes from the Makefile).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

TOL = 1e-3
ROOT = Path(__file__).resolve().parents[3]


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def tiny_peft(tiny_model_dir):
    """The tiny model with LoRA adapters whose B is non-zero, so merging them changes the weights."""
    import torch
    from peft import LoraConfig, get_peft_model

    from llmgen.models import load_model, load_tokenizer

    model, _ = load_model(tiny_model_dir)
    torch.manual_seed(0)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False))
    peft_model.eval()
    return peft_model, load_tokenizer(tiny_model_dir)


def held_back(text: str) -> str:
    """``text`` without a trailing incomplete UTF-8 character: where ``max_tokens`` cuts one (the
    tiny model's byte tokens often do), HF decodes it as U+FFFD and vLLM's detokenizer holds it back."""
    return text.rstrip("\ufffd")


def assert_rows_agree(hf_rows: list[dict], vl_rows: list[dict]) -> set[str]:
    """Row by row: same request; ranked rows' choice logprobs within TOL, generated rows' text identical.
    Returns the kinds of rows seen ("ranked", "generated")."""
    assert len(hf_rows) == len(vl_rows) > 0
    kinds = set()
    for h, v in zip(hf_rows, vl_rows, strict=True):
        assert (v["task"], v["format_id"], v["doc_id"], v["prompt"]) == (h["task"], h["format_id"], h["doc_id"], h["prompt"])
        if "choice_logprobs" in h:
            kinds.add("ranked")
            assert v["choice_logprobs"] == pytest.approx(h["choice_logprobs"], abs=TOL)
            assert v["metrics"] == h["metrics"]
        else:
            kinds.add("generated")
            assert v["responses"] == h["responses"]
            assert v["correct"] == h["correct"]
    return kinds


def test_format_eval_vllm_matches_hf(tiny_hf, vllm_tiny, tiny_model_dir, tmp_path):
    """``llmgen eval --formats`` (``run_format_eval``) on a ranked and a generated task, both backends."""
    from llmgen.evaluate import EvalConfig
    from llmgen.prompts.format_eval import run_format_eval

    runs = {}
    for name, backend in (("hf", tiny_hf), ("vllm", vllm_tiny)):
        cfg = EvalConfig(model=tiny_model_dir, backend=name, tasks=["sentiment", "arithmetic"], limit=4, cache=None,
                         output_dir=str(tmp_path / name))
        runs[name] = run_format_eval(cfg, 3, backend=backend, show_progress=False)
    assert runs["vllm"]["backend"]["backend"] == "vllm" and runs["hf"]["backend"]["backend"] == "hf"
    rows = {n: _jsonl(tmp_path / n / "format_samples.jsonl") for n in runs}
    assert len(rows["hf"]) == 2 * 3 * 4  # tasks × formats × examples, exhaustive
    assert assert_rows_agree(rows["hf"], rows["vllm"]) == {"ranked", "generated"}
    for task in ("sentiment", "arithmetic"):
        hf_f, vl_f = (runs[n]["format_spread"][task]["formats"] for n in ("hf", "vllm"))
        assert [f["metrics"] for f in vl_f] == [f["metrics"] for f in hf_f]
    assert runs["vllm"]["results"] == runs["hf"]["results"]


@pytest.mark.parametrize("metric", ["probability_ranking", "exact_prefix_matching"])
def test_format_spread_recipe_vllm_matches_hf(metric, tiny_hf, vllm_tiny, tiny_model_dir, tmp_path):
    """The FormatSpread recipe with ``backend="vllm"``: same rows and the same spread as with HF."""
    from llmgen.config import load_config
    from llmgen.recipes.format_spread import FormatSpreadConfig, run

    out = {}
    for name, backend in (("hf", tiny_hf), ("vllm", vllm_tiny)):
        cfg = load_config(FormatSpreadConfig, None, {
            "model": tiny_model_dir, "eval.backend": name, "num_formats": 3, "eval.limit": 4, "mode": "exhaustive",
            "metric": metric, "eval.max_new_tokens": 4, "output_dir": str(tmp_path / name)})
        out[name] = run(cfg, backend=backend)
    assert out["vllm"]["backend"]["backend"] == "vllm"
    kinds = assert_rows_agree(*(_jsonl(tmp_path / n / "format_samples.jsonl") for n in ("hf", "vllm")))
    assert kinds == {"ranked" if metric == "probability_ranking" else "generated"}
    hf_e, vl_e = (out[n]["format_spread"]["sentiment"] for n in ("hf", "vllm"))
    assert vl_e["spread"] == pytest.approx(hf_e["spread"], abs=TOL)
    assert [f["pulls"] for f in vl_e["formats"]] == [f["pulls"] for f in hf_e["formats"]]


def test_unlearning_evaluator_vllm_merges_lora_and_matches_hf(tiny_peft, tmp_path):
    """``Evaluator`` with ``backend="vllm"`` saves the LoRA model merged and scores the saved copy:
    the same TOFU metrics as HF on the in-memory peft model, and the peft model is left as it was."""
    from llmgen.config import load_config
    from llmgen.recipes.npo_unlearning import Evaluator, UnlearnConfig
    from llmgen.tasks.tofu import SyntheticTofuConfig, tofu_task, write_synthetic_tofu
    from llmgen.training.modeling import is_peft

    model, tok = tiny_peft
    tofu = write_synthetic_tofu(tmp_path / "tofu", SyntheticTofuConfig(n_authors=3, retain_eval_size=3))
    task = tofu_task(str(tofu), "forget10", ds_size=3, max_new_tokens=6)
    res = {}
    for name in ("vllm", "hf"):
        cfg = load_config(UnlearnConfig, None, {"model": "unused", "data": str(tofu), "eval.backend": name,
                                                "eval.max_new_tokens": 6, "output_dir": str(tmp_path / name)})
        res[name] = Evaluator(cfg, task, tok)(model, "npo-step1")
    saved = tmp_path / "vllm" / "eval_models" / "npo-step1"
    assert (saved / "config.json").is_file() and not (saved / "adapter_config.json").exists()  # merged, not an adapter
    assert is_peft(model)  # merged a copy
    (hs, hf), (vs, vl) = res["hf"], res["vllm"]
    assert [r["doc_id"] for r in vl] == [r["doc_id"] for r in hf] and len(hf) == 12
    for h, v in zip(hf, vl, strict=True):
        assert [held_back(g) for g in v["responses"]] == [held_back(g) for g in h["responses"]]
        for key in ("truth_ratio", "rougeL"):
            assert v["metrics"][key] == pytest.approx(h["metrics"][key], abs=TOL)
    assert vs.keys() == hs.keys()
    assert vs == pytest.approx(hs, abs=TOL)


def test_passn_evaluation_vllm_matches_hf(tiny_peft, tmp_path):
    """passn's evaluation callback with ``backend="vllm"`` (merge, save the step's model, start an
    engine): the same greedy answers and confidences as HF on the in-memory model."""
    from llmgen.config import load_config
    from llmgen.recipes.confidence_limiting import ConfidenceLimitingConfig, Measurements, load_problems

    model, tok = tiny_peft
    rows = {}
    for name in ("vllm", "hf"):
        cfg = load_config(ConfidenceLimitingConfig, None, {
            "model": "unused", "eval.backend": name, "n_train": 1, "n_test": 4, "eval.num_samples": 3,
            "eval.max_new_tokens": 4, "progress": False, "output_dir": str(tmp_path / name)})
        history = Measurements(cfg, load_problems(cfg)[1], tok, tmp_path / name, "ce", 1, {})
        history(model, 1)
        rows[name] = history.samples
    assert (tmp_path / "vllm" / "checkpoints" / "ce-step1" / "config.json").is_file()
    assert len(rows["hf"]) == len(rows["vllm"]) == 4
    for h, v in zip(rows["hf"], rows["vllm"], strict=True):
        assert (v["id"], held_back(v["greedy"]), v["greedy_correct"]) == (h["id"], held_back(h["greedy"]), h["greedy_correct"])
        assert v["greedy_confidence"] == pytest.approx(h["greedy_confidence"], abs=TOL)
        assert v["num_samples"] == h["num_samples"] == 3


def test_make_retain_logs_vllm_matches_hf(vllm_tiny, tiny_model_dir, tmp_path):
    """Retain logs written through vLLM hold the same forget truth ratios as through HF.
    ``make_retain_logs`` opens (and closes) its own backend, which shares ``vllm_tiny``'s engine."""
    from llmgen.recipes.npo_unlearning import make_retain_logs
    from llmgen.tasks.tofu import SyntheticTofuConfig, write_synthetic_tofu

    tofu = write_synthetic_tofu(tmp_path / "tofu", SyntheticTofuConfig(n_authors=3, retain_eval_size=3))
    logs = {name: json.loads(Path(make_retain_logs(tiny_model_dir, str(tofu), "forget10", str(tmp_path / f"{name}.json"),
                                                   eval_limit=3, backend=name, max_new_tokens=4)).read_text())
            for name in ("hf", "vllm")}
    assert logs["vllm"]["n"] == logs["hf"]["n"] == 3
    assert logs["vllm"]["forget_truth_ratios"] == pytest.approx(logs["hf"]["forget_truth_ratios"], abs=TOL)
    assert logs["vllm"]["forget_truth_ratio"] == pytest.approx(logs["hf"]["forget_truth_ratio"], abs=TOL)


def make_run_command() -> list[str]:
    """The ``llmgen eval`` line of the Makefile's ``run`` target, as arguments after ``llmgen``."""
    text = (ROOT / "Makefile").read_text()
    target = re.search(r"^run:.*\n((?:\t.*\n)+)", text, re.M)
    assert target, "the Makefile has no run target"
    line = next(cmd for cmd in target.group(1).splitlines() if "llmgen eval" in cmd)
    args = shlex.split(line.split("llmgen", 1)[1])
    assert args[0] == "eval"
    return args


def _set_option(args: list[str], option: str, value: str) -> list[str]:
    if option in args:
        i = args.index(option)
        return args[:i + 1] + [value] + args[i + 2:]
    return [*args, option, value]


@pytest.mark.vllm
def test_make_run_command_writes_its_results(tmp_path):
    """``make run``'s own command (read from the Makefile, so the two cannot drift) with ``--limit 2``,
    run as a user runs it: the installed ``llmgen`` script in a fresh process, the only test that
    starts a vLLM engine from the command line. So it also checks what only a fresh process shows:
    stdout is only the results table and the engine is quiet (no INFO/WARNING lines) unless --verbose."""
    args = make_run_command()
    task = args[args.index("--tasks") + 1]
    args = _set_option(_set_option(args, "--limit", "2"), "--output-dir", str(tmp_path / "run"))
    llmgen = Path(sys.executable).with_name("llmgen")
    r = subprocess.run([str(llmgen), *args], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["backend"]["backend"] == args[args.index("--backend") + 1]
    assert res["n_samples"][task] == 2
    metrics = res["results"][task]
    n = int(args[args.index("--num-samples") + 1])
    assert {"exact_match", f"pass@{n}"} <= metrics.keys(), metrics
    assert all(0.0 <= v <= 1.0 for v in metrics.values())
    rows = _jsonl(tmp_path / "run" / "samples.jsonl")
    assert len(rows) == 2 and all(len(row["responses"]) == n for row in rows)
    # stdout: the title line, then only table lines, one row per metric of the task
    lines = [line for line in r.stdout.splitlines() if line.strip()]
    assert lines[0].strip() == f"{res['model']} · vllm", r.stdout
    assert all(line[0] in "┏┃┡│└" for line in lines[1:]), r.stdout
    table_metrics = [line.split("│")[2].strip() for line in lines if line.startswith(f"│ {task}")]
    assert sorted(table_metrics) == sorted(metrics), r.stdout
    assert not [line for line in r.stderr.splitlines() if " INFO " in line or " WARNING " in line], r.stderr
    # stderr: llmgen's own lines only, the progress bar and where the results went (no Triton, NUMA
    # or weight-loading lines from the engine's spawned processes)
    own = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(own) == 2 and own[0].startswith(task) and own[1].startswith("wrote "), r.stderr

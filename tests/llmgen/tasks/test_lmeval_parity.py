"""Held-out parity: ``llmgen eval --tasks lmeval:NAME`` at its default flags against ``lm_eval --model hf``
run by lm-eval's own command line at its defaults (float32, the embedded SmolLM2).

The tasks: lm-eval 0.4.13's own ``gsm8k.yaml`` (5-shot, drawn by lm-eval's seeded sampler) on the
first rows of the real GSM8K files (openai/grade-school-math, in the hub repository openai/gsm8k's
layout under tests/fixtures/hub), a 2-shot multiple-choice task whose demonstrations are drawn from
its own test split, and a loglikelihood_rolling task. Both sides must write the same prompts, the
same greedy answers and the same metrics, and record the same four seeds (lm-eval's CLI defaults
0 / 1234 / 1234 / 1234).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

from llmgen.evaluate import EvalConfig  # noqa: E402
from llmgen.tasks.lmeval import INCLUDE_ENV, convert_results, lmeval_seeds  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "docs" / "examples" / "tasks" / "lmeval"
HUB = ROOT / "tests" / "fixtures" / "hub"
LIMIT = 2
TASKS = ["gsm8k", "parity_capitals_2shot", "llmgen_paragraphs_ppl"]


def test_default_seeds_are_lm_evals_cli_defaults():
    from lm_eval.defaults import DEFAULT_OTHER_SEED, DEFAULT_RANDOM_SEED

    cfg = EvalConfig()
    assert lmeval_seeds(cfg.seed, cfg.fewshot_seed) == {
        "random_seed": DEFAULT_RANDOM_SEED, "numpy_random_seed": DEFAULT_OTHER_SEED,
        "torch_random_seed": DEFAULT_OTHER_SEED, "fewshot_random_seed": DEFAULT_OTHER_SEED}
    assert (DEFAULT_RANDOM_SEED, DEFAULT_OTHER_SEED) == (0, 1234)
    # --seed is python's random seed, --fewshot-seed the sampler's; numpy and torch stay lm-eval's
    assert lmeval_seeds(7, 3) == {"random_seed": 7, "numpy_random_seed": 1234, "torch_random_seed": 1234,
                                  "fewshot_random_seed": 3}


@pytest.fixture
def parity_dir(tmp_path, monkeypatch):
    """A working folder where ``openai/gsm8k`` is the local hub-layout copy (datasets reads a local
    folder before the hub) and ``docs/`` the example tasks' data, and one include folder (lm-eval's
    ``--include_path`` takes one): the example YAMLs plus a 2-shot task."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "openai").symlink_to(HUB / "openai")
    (work / "docs").symlink_to(ROOT / "docs")
    include = tmp_path / "tasks"
    shutil.copytree(EXAMPLES, include, ignore=shutil.ignore_patterns("data", "__pycache__"))
    (include / "parity_capitals_2shot.yaml").write_text(
        "include: llmgen_capitals_fields.yaml\ntask: parity_capitals_2shot\nnum_fewshot: 2\n")
    for k, v in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "hf"),
                 "TOKENIZERS_PARALLELISM": "false", INCLUDE_ENV: str(include)}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(work)
    return work, include


def _lm_eval_cli(work: Path, include: Path, model: str, out: Path) -> tuple[dict, dict[str, list[dict]]]:
    """lm-eval's own command line with its defaults (no --seed): results and logged samples per task."""
    cmd = [str(Path(sys.executable).parent / "lm_eval"), "--model", "hf", "--model_args",
           f"pretrained={model},dtype=float32", "--device", "cpu", "--tasks", ",".join(TASKS),
           "--include_path", str(include), "--limit", str(LIMIT), "--log_samples", "--output_path", str(out)]
    r = subprocess.run(cmd, cwd=work, env={**os.environ}, capture_output=True, text=True, timeout=2400)
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads(next(out.rglob("results_*.json")).read_text())
    samples = {t: [json.loads(x) for x in next(out.rglob(f"samples_{t}_*.jsonl")).read_text().splitlines()]
               for t in TASKS}
    return results, samples


def _logged(value) -> tuple:
    """A logged log-likelihood response as lm-eval writes it (``sanitize_list``: every item a string):
    ["-1.2", "False"] for a (log-likelihood, greedy) pair, "-65.7" for a rolling log-likelihood."""
    if isinstance(value, list | tuple):
        return (float(value[0]), *(v if isinstance(v, bool) else v == "True" for v in value[1:]))
    return (float(value),)


@pytest.mark.slow
def test_lmeval_defaults_give_lm_evals_own_run(parity_dir, default_model_dir, tmp_path):
    from llmgen.cli.main import main

    work, include = parity_dir
    ref, ref_samples = _lm_eval_cli(work, include, default_model_dir, tmp_path / "lm_eval_out")
    run = tmp_path / "llmgen_run"
    # the llmgen command line at its defaults (model: the embedded one; an error would raise SystemExit)
    main(["eval", "--tasks", ",".join(f"lmeval:{t}" for t in TASKS), "--limit", str(LIMIT), "--no-cache",
          "--output-dir", str(run)])
    out = json.loads((run / "results.json").read_text())
    rows = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    # every seed recorded, and they are the ones lm-eval's own run recorded
    seeds = {k: ref["config"][k] for k in ("random_seed", "numpy_seed", "torch_seed", "fewshot_seed")}
    assert seeds == {"random_seed": 0, "numpy_seed": 1234, "torch_seed": 1234, "fewshot_seed": 1234}
    for t in TASKS:
        assert out["tasks"][f"lmeval:{t}"]["seeds"] == {
            "random_seed": seeds["random_seed"], "numpy_random_seed": seeds["numpy_seed"],
            "torch_random_seed": seeds["torch_seed"], "fewshot_random_seed": seeds["fewshot_seed"]}
        ours = {r["doc_id"]: r for r in rows if r["task"] == f"lmeval:{t}"}
        assert sorted(ours) == sorted({s["doc_id"] for s in ref_samples[t]}) == list(range(LIMIT))
        for s in ref_samples[t]:  # one logged sample per document and filter
            i = s["doc_id"]
            assert ours[i]["prompt"] == s["arguments"]["gen_args_0"]["arg_0"], (t, i)  # few-shot draws included
            if t == "gsm8k":  # the same greedy answer, character for character
                assert ours[i]["responses"] == [r for resp in s["resps"] for r in resp], (t, i)
            else:  # log-likelihoods (logged as strings) within float32 noise, the same greedy flags
                resps = [_logged(r) for resp in s["resps"] for r in resp]
                mine = [tuple(r) if isinstance(r, list) else (r,) for r in ours[i]["responses"]]
                assert len(mine) == len(resps) > 0
                for a, b in zip(mine, resps, strict=True):
                    assert a[0] == pytest.approx(b[0], rel=1e-4, abs=1e-4) and a[1:] == b[1:], (t, i, a, b)
            for m in s["metrics"]:
                key = m if s["filter"] == "none" else f"{m}/{s['filter']}"
                if isinstance(s[m], int | float):
                    assert ours[i]["metrics"][key] == pytest.approx(s[m], rel=1e-4), (t, i, key)
        expected = convert_results(t, {"results": {t: ref["results"][t]}})
        assert set(expected) == set(out["results"][f"lmeval:{t}"])
        for m, v in expected.items():
            assert out["results"][f"lmeval:{t}"][m] == pytest.approx(v, rel=1e-4, abs=1e-6), (t, m)
    gsm = {r["doc_id"]: r for r in rows if r["task"] == "lmeval:gsm8k"}
    assert all(r["prompt"].count("Question: ") == 6 for r in gsm.values())  # 5 demonstrations + the question

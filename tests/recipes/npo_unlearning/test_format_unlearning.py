"""``eval_formats``: the unlearning recipe scores its start and final models in K question formats.

On TOFU's own rows (``tests/fixtures/tofu`` = ``../shared/data/tofu``: forget10, retain90 and the evaluation sets) with the
tiny random-init model standing in for the fine-tuned and the retain-only models.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmgen.config import load_config
from llmgen.errors import LlmgenError
from llmgen.recipes.npo_unlearning import UnlearnConfig, make_retain_logs, run

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "tofu"
DATA = str(FIXTURE)  # TOFU's own first rows, byte for byte the files of ../shared/data/tofu
K = 3


def test_eval_formats_must_not_be_negative(tmp_path):
    with pytest.raises(LlmgenError, match=r"eval_formats must be >= 0 \(0: off\), got -1"):
        run(load_config(UnlearnConfig, None, {"eval_formats": -1, "output_dir": str(tmp_path / "run")}))
    assert not (tmp_path / "run").exists()


def test_start_and_final_models_in_k_formats(tiny_model_dir, tmp_path):
    logs = make_retain_logs(tiny_model_dir, DATA, "forget10", str(tmp_path / "retain_logs.json"), eval_limit=1,
                            max_new_tokens=2)
    cfg = load_config(UnlearnConfig, None, {
        "model": tiny_model_dir, "data": DATA, "forget_split": "forget10", "methods": ["npo"], "retain_logs": logs,
        "train.max_steps": 1, "train.eval_every": 1, "eval.limit": 1, "train.lr": 1e-3, "train.batch_size": 4,
        "train.grad_accum": 1, "warmup_epochs": 0, "eval.max_new_tokens": 2, "train.lora_r": 4,
        "eval_formats": K, "output_dir": str(tmp_path / "run")})
    run(cfg)
    out = tmp_path / "run"
    saved = json.loads((out / "results.json").read_text())
    spread = saved["format_spread"]
    assert set(spread) == {"tofu_forget10/start", "tofu_forget10/npo"} == set(saved["results"])
    for key, entry in spread.items():
        assert [f["format_id"] for f in entry["formats"]] == list(range(K))
        # format 0 is the recipe's own evaluation of that model, value for value
        assert entry["formats"][0]["metrics"] == saved["results"][key]
        for f in entry["formats"]:
            assert 0 <= f["metrics"]["forget_quality"] <= 1
            u = f["uncertainty"]["forget.prob"]
            assert u["ci_low"] <= f["metrics"]["forget.prob"] <= u["ci_high"]
        assert {"forget.prob", "forget.rougeL", "forget_quality", "model_utility"} <= set(entry["summary"])
    rows = [json.loads(line) for line in (out / "format_samples.jsonl").read_text().splitlines()]
    assert {(r["method"], r["format_id"]) for r in rows} == {(m, i) for m in ("start", "npo") for i in range(K)}
    assert len(rows) == 2 * K * 4  # 2 models x K formats x 4 sets of 1 row

    # off by default: no format_spread, no format_samples.jsonl
    assert UnlearnConfig().eval_formats == 0

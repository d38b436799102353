"""The unlearning recipe end to end on a tiny model, and its configuration errors."""

from __future__ import annotations

import json

import pytest

from llmgen.config import load_config
from llmgen.errors import LlmgenError
from llmgen.recipes.npo_unlearning import UnlearnConfig, finetune, make_retain_logs, run, warmup_steps
from llmgen.tasks.tofu import SyntheticTofuConfig, write_synthetic_tofu
from llmgen.training.config import TrainConfig


@pytest.fixture(scope="module")
def tofu_dir(tmp_path_factory):
    return str(write_synthetic_tofu(tmp_path_factory.mktemp("tofu"),
                                    SyntheticTofuConfig(n_authors=3, retain_eval_size=3)))


@pytest.mark.parametrize("kwargs, match", [
    ({"methods": ["npx"]}, "unknown unlearning method 'npx'"),
    ({"methods": ["npo"], "method_args.npo.beta": 0.0}, "beta must be > 0"),
    ({"methods": ["npo"], "method_args.npo.beta": -1.0}, "beta must be > 0"),
    ({"forget_split": "forget"}, "unknown forget split"),
    ({"forget_split": "forget99"}, r"unknown forget split 'forget99' in TOFU \(valid: forget01, forget05, forget10\)"),
    ({"methods": ["npo", "simnpo"], "method_args.simnpo.beta": 3.0}, None),
    ({"methods": ["simnpo"], "method_args.npo.beta": 0.2}, r"method_args.npo: not one of this run's methods \(simnpo\)"),
    ({"methods": ["simnpo"], "method_args.simnpo.ga_reduction": "sum"}, "method 'simnpo' takes no argument 'ga_reduction'"),
    ({"methods": ["gd"], "method_args.gd.ga_reduction": "max"}, "unknown ga_reduction 'max'"),
    ({"beta": 0.1}, "unknown config key 'beta'"),
    ({"ds_size": 0}, "ds_size must be >= 1"),
    ({"eval.backend": "tgi"}, "unknown eval.backend"),
    ({"eval.temperature": 1.0}, "eval.temperature: set by the UnlearnConfig recipe itself"),
    ({"train.loss": "ga"}, "train.loss: set by the UnlearnConfig recipe itself"),
])
def test_bad_config_is_a_clear_error(tmp_path, kwargs, match):
    with pytest.raises(LlmgenError, match=match or "needs retain-model logs"):  # None: valid, fails later
        run(load_config(UnlearnConfig, None, {"output_dir": str(tmp_path / "run"), **kwargs}))
    assert not (tmp_path / "run").exists()  # nothing written


def test_missing_retain_logs_is_a_clear_error(tmp_path):
    with pytest.raises(LlmgenError, match="retain-model logs not found"):
        run(UnlearnConfig(retain_logs=str(tmp_path / "none.json"), output_dir=str(tmp_path / "run")))
    with pytest.raises(LlmgenError, match="needs retain-model logs"):
        run(UnlearnConfig(output_dir=str(tmp_path / "run")))
    assert not (tmp_path / "run").exists()


def test_cli_reports_bad_method(tmp_path, capsys):
    from llmgen.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["npo-unlearning", "--method", "npx", "-o", str(tmp_path / "x")])
    assert exc.value.code == 2
    assert "unknown unlearning method 'npx'" in capsys.readouterr().err


def test_tiny_end_to_end(tiny_model_dir, tofu_dir, tmp_path, monkeypatch):
    ft = finetune(tiny_model_dir, tofu_dir, "full", str(tmp_path / "ft"),
                  load_config(TrainConfig, None, {"max_steps": 2, "lr": 1e-3, "batch_size": 4}), warmup_epochs=0)
    # any model can stand in for the retain-only one here (the bench trains a real one)
    logs = make_retain_logs(tiny_model_dir, tofu_dir, "forget10", str(tmp_path / "retain_logs.json"), eval_limit=3,
                            max_new_tokens=4)
    assert len(json.loads(open(logs).read())["forget_truth_ratios"]) == 3
    cfg = load_config(UnlearnConfig, None, {
        "model": ft, "data": tofu_dir, "forget_split": "forget10", "methods": ["npo", "npo_rt"], "retain_logs": logs,
        "train.max_steps": 2, "train.eval_every": 2, "eval.limit": 3, "train.lr": 1e-3, "train.batch_size": 4,
        "train.grad_accum": 1, "warmup_epochs": 0, "eval.max_new_tokens": 4, "train.lora_r": 4,
        "output_dir": str(tmp_path / "run")})
    res = run(cfg)
    out = tmp_path / "run"
    saved = json.loads((out / "results.json").read_text())
    assert set(saved["methods"]) == {"npo", "npo_rt"}
    for m in ("npo", "npo_rt"):
        curve = saved["methods"][m]["curve"]
        assert [p["step"] for p in curve] == [0, 2]
        assert all(0 <= p["forget_quality"] <= 1 and 0 <= p["model_utility"] <= 1 for p in curve)
        assert len(saved["methods"][m]["losses"]) == 2
        # unlearning lowers the forget-set answer probability (P(a|q)^(1/|a|), EOS included)
        assert curve[-1]["forget.prob"] < curve[0]["forget.prob"], m
    assert saved["eval_rows"] == {"forget": 3, "retain": 3, "real_authors": 3, "world_facts": 3}
    assert saved["ds_size"] == 300 and not any(k.endswith(".n") for k in saved["start"])  # TOFU's, cut by eval.limit
    assert (saved["prompt_template"], saved["answer_tag"]) == ("default", "context")
    # the results schema of `llmgen eval`: one entry per evaluated model, counts with the task
    from llmgen.evaluate import EvalConfig, run_eval

    monkeypatch.setenv("LLMGEN_TOFU_DATA", tofu_dir)
    ev = run_eval(EvalConfig(model=ft, tasks=["tofu_forget10"], limit=1, max_new_tokens=1, cache=None), show_progress=False)
    assert set(ev) - {"config", "samples"} <= set(saved)
    assert set(saved["results"]) == {"tofu_forget10/start", "tofu_forget10/npo", "tofu_forget10/npo_rt"}
    assert saved["results"]["tofu_forget10/npo"] == {k: v for k, v in saved["methods"]["npo"]["final"].items() if k != "step"}
    assert saved["tasks"]["tofu_forget10/start"]["counts"] == saved["eval_rows"]
    # NPO starts at (2/β)·log 2 (policy = reference) and pushes the forget log-likelihood down
    assert saved["methods"]["npo"]["losses"][0] == pytest.approx(20 * 0.6931, rel=1e-3)
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert {s["method"] for s in samples} == {"start", "npo", "npo_rt"}
    assert set(ev["samples"][0]) | {"method", "step"} == set(samples[0])  # the runner's rows, tagged
    assert {s["split"] for s in samples} == {"forget", "retain", "real_authors", "world_facts"}
    assert (out / "curve.png").stat().st_size > 1000 and "| npo_rt |" in (out / "table.md").read_text()
    assert res["plot"].endswith("curve.png")


def test_chat_prompt_template_is_the_models_own_format(default_model_dir, tiny_model_dir):
    from transformers import AutoTokenizer

    from llmgen.tasks.tofu import prompt_text

    tok = AutoTokenizer.from_pretrained(default_model_dir)
    q = "Who wrote {this}?"  # braces in the question stay as they are
    expected = tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
    assert prompt_text(tok, "chat", q) == expected
    assert expected.endswith("<|im_start|>assistant\n")
    assert prompt_text(tok, "Q: {question}\nA:", "why?") == "Q: why?\nA:"
    tiny = AutoTokenizer.from_pretrained(tiny_model_dir)
    tiny.chat_template = None
    with pytest.raises(LlmgenError, match="has no chat template"):
        prompt_text(tiny, "chat", q)


def test_bad_synthetic_answer_style_is_a_clear_error(tmp_path):
    with pytest.raises(LlmgenError, match="unknown synthetic.answer_style 'medium'"):
        run(load_config(UnlearnConfig, None, {"synthetic.answer_style": "medium", "output_dir": str(tmp_path / "run")}))
    assert not (tmp_path / "run").exists()


def test_cli_chat_prompt_without_a_chat_template_is_one_error_line(tiny_model_dir, tofu_dir, tmp_path, capsys):
    from llmgen.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["npo-unlearning", "--stage", "finetune", "--model", tiny_model_dir, "--data", tofu_dir, "--steps", "1",
              "--prompt-template", "chat", "-o", str(tmp_path / "ft")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: this model's tokenizer has no chat template; use a plain prompt "
                   "(no --apply-chat-template, no prompt template 'chat')"]
    assert not (tmp_path / "ft" / "model").exists()


def test_cli_unknown_forget_split_names_it_and_writes_nothing(tmp_path, capsys):
    from pathlib import Path

    from llmgen.cli.main import main

    real = str(Path(__file__).parents[2] / "fixtures" / "tofu")
    for extra, valid in (([], "forget01, forget05, forget10"), (["--data", real], "forget10")):
        with pytest.raises(SystemExit) as exc:
            main(["npo-unlearning", "--forget", "forget99", "-o", str(tmp_path / "x"), *extra])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "unknown forget split 'forget99'" in err[0] and f"(valid: {valid})" in err[0]
        assert not (tmp_path / "x").exists()


def test_schedule_defaults_follow_the_reference():
    import inspect

    cfg = UnlearnConfig()
    t = cfg.train
    # open-unlearning's unlearning trainers: lr 1e-5, 8 x 4 = 32 per step, one warm-up epoch, linear decay
    assert (t.lr, t.batch_size * t.grad_accum, cfg.warmup_epochs, t.schedule) == (1e-5, 32, 1.0, "linear")
    assert (t.epochs, t.weight_decay) == (10.0, 0.01) and cfg.eval.max_new_tokens == 200
    # TOFU's finetune.yaml: 5 epochs, batch 16 per GPU on 2 GPUs (= 16 x 2 here), lr 1e-5, weight decay
    # 0.01; finetune.py: one warm-up epoch
    f = cfg.finetune
    assert (f.epochs, f.batch_size, f.grad_accum, f.lr, f.weight_decay, f.max_length) == (5.0, 16, 2, 1e-5, 0.01, 500)
    assert inspect.signature(finetune).parameters["warmup_epochs"].default == 1.0
    # TOFU forget10 (400 rows), batch 32: max_steps = 5·400 // 32 = 62 and warm-up 62 // 5 = 12
    assert warmup_steps(400, 8, 4, 1.0) == 12 == (5 * 400 // 32) // 5
    assert warmup_steps(4000, 16, 1, 1.0) == 250 and warmup_steps(10, 16, 1, 1.0) == 1
    assert warmup_steps(4000, f.batch_size, f.grad_accum, 1.0) == 625 // 5  # TOFU's checkpoint-625, 5 epochs
    assert warmup_steps(400, 8, 4, 0.0) == 0

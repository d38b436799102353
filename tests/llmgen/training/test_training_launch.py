"""Training in other processes: a real SIGKILL + resume, a 2-process (gloo) run, the CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[3]
PY = sys.executable

KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from llmgen.models import tiny_model
    from llmgen.training import TrainConfig, train
    from llmgen.training.data import prompt_answer_dataset

    out, kill_at = sys.argv[1], int(sys.argv[2])
    model, tok = tiny_model(0)
    data = prompt_answer_dataset([{"prompt": f"Q{i}: ", "answer": f"ans {i % 5} xyz"} for i in range(40)], tok)

    def eval_fn(_model, step):
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    cfg = TrainConfig(output_dir=out, lr=3e-3, max_steps=14, batch_size=6, grad_accum=2, save_every=5,
                      eval_every=1, lora_r=4, lora_dropout=0.1, schedule="cosine", warmup_steps=2,
                      resume=kill_at < 0, seed=3)
    res = train(cfg, model=model, tokenizer=tok, train_dataset=data, eval_fn=eval_fn)
    print("FINAL", repr(res.final_loss), res.resumed_from)
""")


def _env() -> dict:
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _final(out: subprocess.CompletedProcess) -> tuple[float, str]:
    assert out.returncode == 0, out.stderr[-3000:]
    line = [x for x in out.stdout.splitlines() if x.startswith("FINAL")][-1].split()
    return float(line[1]), line[2]


def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    """LoRA with dropout: the resumed run must restore adapters, optimizer, scheduler, RNG, data position."""
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT)
    cut = tmp_path / "cut"
    # the uninterrupted run goes alongside the one that gets killed
    full = subprocess.Popen([PY, str(script), str(tmp_path / "full"), "-1"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())
    killed = subprocess.run([PY, str(script), str(cut), "12"], capture_output=True, text=True, env=_env(),
                            timeout=300)
    assert killed.returncode == -signal.SIGKILL
    ckpts = sorted(p.name for p in (cut / "checkpoints").iterdir())
    assert ckpts == ["step-10", "step-5"] and not (cut / "final").exists()
    assert (cut / "checkpoints" / "step-10" / "model.safetensors").stat().st_size < 200_000  # adapter only

    resumed = subprocess.run([PY, str(script), str(cut), "-1"], capture_output=True, text=True, env=_env(),
                             timeout=300)
    stdout, stderr = full.communicate(timeout=300)
    full = subprocess.CompletedProcess(full.args, full.returncode, stdout, stderr)
    loss_resumed, source = _final(resumed)
    loss_full, none = _final(full)
    assert source.endswith("step-10") and none == "None"
    assert loss_resumed == pytest.approx(loss_full, rel=1e-6)
    rows = [json.loads(x) for x in (cut / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 15))


def _write_jsonl(path: Path, n: int = 24) -> Path:
    path.write_text("".join(json.dumps({"prompt": f"Q{i}: ", "answer": f"a{i % 3} b"}) + "\n" for i in range(n)))
    return path


@pytest.fixture(scope="module")
def train_jsonl(tmp_path_factory):
    return str(_write_jsonl(tmp_path_factory.mktemp("data") / "train.jsonl"))


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "llmgen.cli.main", "train", *args], capture_output=True, text=True,
                          env=_env(), timeout=300, cwd=cwd)


def test_cli_train_and_one_line_errors(tmp_path, tiny_model_dir, train_jsonl):
    from llmgen.models import load_model

    out = tmp_path / "run"
    ok = _cli(["--model", tiny_model_dir, "--data", train_jsonl, "--max-steps", "3", "--batch-size", "4",
               "--lora-r", "4", "--output-dir", str(out), "--no-progress"], tmp_path)
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert "trained 3 steps" in ok.stdout
    assert (out / "final" / "adapter_config.json").is_file()
    model, _ = load_model(tiny_model_dir, adapter=str(out / "final"))
    assert type(model).__name__ == "PeftModelForCausalLM"

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x", "answer": "y"}\n{"prompt": "z"}\n')
    cases = [
        (["--data", str(bad), "--data-format", "prompt_answer"], "row 2: missing field 'answer'"),
        (["--data", train_jsonl, "--loss", "nope"], "unknown loss 'nope'"),
    ]
    for extra, message in cases:
        run = _cli(["--model", tiny_model_dir, "--output-dir", str(tmp_path / "never"), *extra], tmp_path)
        errors = [x for x in run.stderr.splitlines() if x.startswith("error:")]
        assert run.returncode == 2, run.stderr[-2000:]
        assert len(errors) == 1 and message in errors[0], run.stderr[-2000:]
        assert "Traceback" not in run.stderr
    assert not (tmp_path / "never").exists()


def test_two_process_unlearning_writes_one_run_folder(tmp_path, tiny_model_dir):
    """`llmgen npo-unlearning` under torchrun: both ranks train in step, rank 0 alone writes results."""
    from llmgen.recipes.npo_unlearning import make_retain_logs
    from llmgen.tasks.tofu import SyntheticTofuConfig, write_synthetic_tofu

    torchrun = shutil.which("torchrun", path=str(Path(PY).parent)) or shutil.which("torchrun")
    if torchrun is None or not torch.distributed.is_gloo_available():
        pytest.skip("torchrun or gloo not available")
    data = write_synthetic_tofu(tmp_path / "tofu", SyntheticTofuConfig(n_authors=3, retain_eval_size=3))
    logs = make_retain_logs(tiny_model_dir, str(data), "forget10", str(tmp_path / "logs.json"), eval_limit=3)
    out = tmp_path / "run"
    cmd = [torchrun, "--nproc_per_node", "2", "--master_port", str(29300 + os.getpid() % 300),
           "-m", "llmgen.cli.main", "npo-unlearning", "--model", tiny_model_dir, "--data", str(data), "--forget", "forget10",
           "--retain-logs", logs, "--method", "ga,npo_rt", "--steps", "2", "--eval-every", "2", "--eval-limit", "3",
           "--batch-size", "2", "--lr", "1e-3", "--max-new-tokens", "4", "--output-dir", str(out)]
    run = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert set(res["methods"]) == {"ga", "npo_rt"} and all(m["steps"] == 2 for m in res["methods"].values())
    for m in ("ga", "npo_rt"):
        train_res = json.loads((out / m / "results.json").read_text())
        assert train_res["num_processes"] == 2 and min(train_res["tokens_per_rank"]) > 0
    assert (out / "curve.png").is_file() and (out / "samples.jsonl").is_file()
    assert run.stdout.count("wrote ") == 1  # only rank 0 reports
    assert not list(out.glob(".*.tmp"))


def test_fsdp_two_cpu_processes(tmp_path, tiny_model_dir, train_jsonl):
    """Two gloo ranks on CPU, launched two ways. ``torchrun`` (DDP): accelerate joins the ranks, both
    train and stay in step, rank 0 alone reports. ``accelerate launch`` with configs/accelerate/fsdp_cpu.yaml:
    FSDP2 (sharded checkpoint format) reaches the losses of the same run under DDP, and final/ is a
    loadable full model. (One DDP run serves both: it was a test of its own, one launch more.)"""
    accelerate = shutil.which("accelerate", path=str(Path(PY).parent)) or shutil.which("accelerate")
    torchrun = shutil.which("torchrun", path=str(Path(PY).parent)) or shutil.which("torchrun")
    if accelerate is None or torchrun is None or not torch.distributed.is_gloo_available():
        pytest.skip("accelerate/torchrun or gloo not available")
    args = ["-m", "llmgen.cli.main", "train", "--model", tiny_model_dir, "--data", train_jsonl, "--max-steps", "8",
            "--batch-size", "2", "--lr", "3e-3", "--save-every", "4", "--no-progress"]
    port = str(29900 + os.getpid() % 90)
    launches = {
        "ddp": [torchrun, "--nproc_per_node", "2", "--master_port", str(int(port) + 1)],
        "fsdp": [accelerate, "launch", "--config_file", str(REPO / "configs/accelerate/fsdp_cpu.yaml"),
                 "--main_process_port", port],
    }
    losses, final = {}, {}
    for name, launch in launches.items():
        out = tmp_path / name
        run = subprocess.run([*launch, *args, "--output-dir", str(out)], capture_output=True, text=True, env=_env(),
                             timeout=400, cwd=tmp_path)
        assert run.returncode == 0, run.stderr[-3000:]
        res = json.loads((out / "results.json").read_text())
        assert res["num_processes"] == 2 and res["steps"] == 8
        assert len(res["tokens_per_rank"]) == 2 and min(res["tokens_per_rank"]) > 0
        assert res["epoch"] == pytest.approx(8 * 2 * 2 / 24, abs=1e-3)  # each step consumes 2 rows per rank
        losses[name] = [json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines()]
        assert len(losses[name]) == 8 and losses[name][-1] < losses[name][0]
        final[name] = out / "final"
        ckpt = {p.name for p in (out / "checkpoints" / "step-4").iterdir()}
        assert ckpt >= {"random_states_0.pkl", "random_states_1.pkl"}, ckpt
        assert ("pytorch_model_fsdp.bin" in ckpt) == (name == "fsdp"), ckpt  # FSDP saved through FSDP's path
        assert run.stdout.count("trained 8 steps") == 1  # only rank 0 reports
    assert losses["fsdp"] == pytest.approx(losses["ddp"], rel=1e-4)
    from llmgen.models import load_model

    (fsdp_model, _), (ddp_model, _) = load_model(str(final["fsdp"])), load_model(str(final["ddp"]))
    for (name, a), (_, b) in zip(fsdp_model.state_dict().items(), ddp_model.state_dict().items(), strict=True):
        assert torch.allclose(a, b, atol=1e-4), name

"""One-GPU check: HF-backend generation/loglikelihood throughput and training tokens/s + MFU vs ``Trainer``.

Run by ``bench/gpu_check.sh`` (which sets the time limit). Needs only torch, transformers, peft and
accelerate (no vLLM, no network): the embedded model's folder is passed in, and the ~1B Llama is a
random-init config, measured for throughput only. Every part appends to ``--out`` (JSON, written
atomically) as soon as it finishes, so a run cut short by the time limit keeps what it measured.

MFU = achieved training FLOP/s / peak bf16 FLOP/s, with FLOPs per trained token
``6 * n_params + 12 * n_layers * hidden * seq_len`` (weights forward + backward, plus attention
scores and values; PaLM appendix B). Peak: 989 TFLOP/s for H100/H200 SXM dense bf16, 312 for A100,
or ``--peak-tflops``; without one (CPU) MFU is left out.

    python bench/gpu_check.py --model /path/to/smollm2-135m-instruct --out gpu_check.json
    python bench/gpu_check.py --model ... --smoke      # minutes-free sizes, runs on CPU
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, when llmgen is not installed

PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}
WORDS = ("river stone lantern orbit maple signal harbor quartz meadow ember canyon violet "
         "engine pepper glacier thunder saddle mirror cobalt willow").split()


@dataclass(frozen=True)
class Sizes:
    """How much work each part does; ``SMOKE`` fits a CPU in a minute, ``FULL`` one H200 in < 8 minutes."""

    gen_prompts: int
    gen_tokens: int
    gen_batch: int
    ll_pairs: int
    ll_context_words: int
    ll_batch: int
    train_steps: int
    train_batch: int
    seq_len: int
    big_train_batch: int
    big: dict


FULL = Sizes(gen_prompts=512, gen_tokens=128, gen_batch=128, ll_pairs=2048, ll_context_words=200, ll_batch=64,
             train_steps=30, train_batch=16, seq_len=1024, big_train_batch=8,
             big=dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                      num_key_value_heads=8))  # Llama-3.2-1B's shape on the embedded vocabulary: ~1.07B params
SMOKE = Sizes(gen_prompts=6, gen_tokens=8, gen_batch=4, ll_pairs=8, ll_context_words=20, ll_batch=4,
              train_steps=2, train_batch=2, seq_len=32, big_train_batch=2,
              big=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2))


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def text(rng, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def peak_flops(device_name: str, override: float | None) -> float | None:
    if override:
        return override * 1e12
    return next((v * 1e12 for k, v in PEAK_TFLOPS.items() if k in device_name), None)


def train_flops_per_token(model, seq_len: int) -> float:
    """``6 N + 12 L d S`` (see the module docstring); N counts tied embeddings once."""
    cfg = model.config
    n_params = sum(p.numel() for p in model.parameters())
    return 6 * n_params + 12 * cfg.num_hidden_layers * cfg.hidden_size * seq_len


# --- inference ---------------------------------------------------------------------------------

def bench_generation(model_path: str, device: str, s: Sizes) -> dict:
    """llmgen's HF backend (greedy, bf16) and plain ``model.generate`` on the same prompts and batch."""
    import random

    import torch

    from llmgen.backends import SamplingConfig
    from llmgen.backends.hf import HFBackend

    rng = random.Random(0)
    prompts = [f"Write a short story that uses the words {text(rng, 6)}.\n" for _ in range(s.gen_prompts)]
    backend = HFBackend(model_path, dtype="bfloat16", device=device, batch_size=s.gen_batch)
    sampling = SamplingConfig(max_tokens=s.gen_tokens)
    backend.generate(prompts[: s.gen_batch], SamplingConfig(max_tokens=4))  # warm-up (kernels, allocator)
    sync()
    t = time.perf_counter()
    outs = backend.generate(prompts, sampling)
    sync()
    wall = time.perf_counter() - t
    generated = sum(len(c[0].token_ids) for c in outs)

    tok, model = backend.tokenizer, backend.model
    tok.padding_side = "left"
    t = time.perf_counter()
    plain = 0
    for start in range(0, len(prompts), s.gen_batch):
        enc = tok(prompts[start : start + s.gen_batch], return_tensors="pt", padding=True,
                  add_special_tokens=False).to(device)
        with torch.no_grad():
            seq = model.generate(**enc, max_new_tokens=s.gen_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        new = seq[:, enc["input_ids"].shape[1]:]
        plain += int((new != tok.pad_token_id).sum())
    sync()
    plain_wall = time.perf_counter() - t
    backend.close()
    del backend, model
    free_memory()
    return {"prompts": len(prompts), "max_tokens": s.gen_tokens, "batch_size": s.gen_batch,
            "llmgen_hf": {"seconds": round(wall, 3), "generated_tokens": generated,
                          "tokens_per_s": round(generated / wall, 1), "requests_per_s": round(len(prompts) / wall, 2)},
            "transformers_generate": {"seconds": round(plain_wall, 3), "generated_tokens": plain,
                                      "tokens_per_s": round(plain / plain_wall, 1)}}


def bench_loglikelihood(model_path: str, device: str, s: Sizes) -> dict:
    """Two-choice items: a shared ~``ll_context_words``-word context, one- to three-word continuations."""
    import random

    from llmgen.backends.hf import HFBackend

    rng = random.Random(1)
    pairs = []
    for _ in range(s.ll_pairs // 2):
        ctx = text(rng, s.ll_context_words) + "\nAnswer:"
        pairs += [(ctx, " " + text(rng, rng.randint(1, 3))) for _ in range(2)]
    backend = HFBackend(model_path, dtype="bfloat16", device=device, batch_size=s.ll_batch)
    backend.loglikelihood(pairs[: s.ll_batch])  # warm-up
    sync()
    t = time.perf_counter()
    res = backend.loglikelihood(pairs)
    sync()
    wall = time.perf_counter() - t
    scored = sum(r.num_tokens for r in res)
    seen = sum(len(backend.tokenizer(c + x, add_special_tokens=False)["input_ids"]) for c, x in pairs)
    backend.close()
    del backend
    free_memory()
    return {"pairs": len(pairs), "batch_size": s.ll_batch, "seconds": round(wall, 3),
            "pairs_per_s": round(len(pairs) / wall, 1), "input_tokens_per_s": round(seen / wall, 1),
            "continuation_tokens": scored}


# --- training ----------------------------------------------------------------------------------

def build_model(kind: str, model_path: str, device: str, s: Sizes):
    """A fresh fp32 model on ``device``: the embedded weights, or the random-init big config."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    if kind == "embedded":
        return AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).to(device)
    base = LlamaConfig.from_pretrained(model_path)
    cfg = LlamaConfig(vocab_size=base.vocab_size, max_position_embeddings=max(2048, s.seq_len),
                      tie_word_embeddings=True, bos_token_id=base.bos_token_id, eos_token_id=base.eos_token_id,
                      **s.big)
    torch.manual_seed(0)
    with torch.device(device):
        return LlamaForCausalLM(cfg)


def token_rows(vocab: int, n: int, seq_len: int) -> list[dict]:
    """Fixed-length rows of random token ids (no padding: every row is ``seq_len`` trained tokens)."""
    import torch

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(100, vocab, (n, seq_len), generator=g).tolist()
    return [{"input_ids": r, "labels": list(r)} for r in ids]


def run_llmgen(model, rows: list[dict], steps: int, batch: int) -> float:
    from llmgen.training import TrainConfig, train

    with tempfile.TemporaryDirectory() as d:
        mp = "bf16" if model.device.type == "cuda" else "no"  # as Trainer below: autocast on GPU only
        cfg = TrainConfig(output_dir=d, lr=1e-5, max_steps=steps, batch_size=batch, mixed_precision=mp,
                          save_final=False, progress=False, log_every=steps, max_length=len(rows[0]["input_ids"]))
        sync()
        t = time.perf_counter()
        res = train(cfg, model=model, train_dataset=rows)
        sync()
        return res.tokens / (time.perf_counter() - t)


def run_trainer(model, rows: list[dict], steps: int, batch: int) -> float:
    import torch
    from transformers import Trainer, TrainingArguments

    def collate(feats):
        ids = torch.tensor([f["input_ids"] for f in feats])
        return {"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones_like(ids)}

    with tempfile.TemporaryDirectory() as d:
        args = TrainingArguments(output_dir=d, per_device_train_batch_size=batch, learning_rate=1e-5, max_steps=steps,
                                 lr_scheduler_type="linear", max_grad_norm=1.0, bf16=model.device.type == "cuda",
                                 logging_steps=steps, save_strategy="no", report_to="none",
                                 use_cpu=model.device.type == "cpu", dataloader_num_workers=0, seed=0,
                                 remove_unused_columns=False, disable_tqdm=True)
        trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=collate)
        sync()
        t = time.perf_counter()
        trainer.train()
        sync()
        return steps * batch * len(rows[0]["input_ids"]) / (time.perf_counter() - t)


def bench_training(kind: str, model_path: str, device: str, s: Sizes, peak: float | None) -> dict:
    """Warm-up then one timed run each of llmgen.training.train and Trainer, same data/batch/bf16 autocast."""
    batch = s.train_batch if kind == "embedded" else s.big_train_batch
    out: dict = {"model": kind, "seq_len": s.seq_len, "batch_size": batch, "steps": s.train_steps,
                 "precision": ("bf16 autocast" if device == "cuda" else "fp32") + ", fp32 weights, AdamW"}
    for name, fn in (("llmgen", run_llmgen), ("trainer", run_trainer)):
        model = build_model(kind, model_path, device, s)
        rows = token_rows(model.config.vocab_size, batch * (s.train_steps + 2), s.seq_len)
        if name == "llmgen":
            out["params"] = sum(p.numel() for p in model.parameters())
            flops_per_token = train_flops_per_token(model, s.seq_len)
        fn(model, rows, 2, batch)  # warm-up: CUDA context, kernels, allocator
        del model
        free_memory()
        model = build_model(kind, model_path, device, s)
        tps = fn(model, rows, s.train_steps, batch)
        out[name] = {"tokens_per_s": round(tps, 1),
                     "mfu": round(tps * flops_per_token / peak, 4) if peak else None}
        del model
        free_memory()
    out["llmgen_over_trainer"] = round(out["llmgen"]["tokens_per_s"] / out["trainer"]["tokens_per_s"], 3)
    return out


# --- driver ------------------------------------------------------------------------------------

def write(path: Path, report: dict) -> None:
    from llmgen.io import atomic_write_json

    atomic_write_json(path, report)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="folder of the embedded model (llmgen.models.resolve_model('default'))")
    p.add_argument("--out", default="gpu_check.json")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (CPU test of the script)")
    p.add_argument("--parts", default="generate,loglikelihood,train_embedded,train_1b")
    p.add_argument("--peak-tflops", type=float, default=None, help="peak bf16 TFLOP/s (default: by GPU name)")
    a = p.parse_args()
    if not (Path(a.model) / "config.json").is_file():
        p.exit(2, f"error: --model {a.model} is not a model folder (no config.json)\n")
    parts = [x for x in a.parts.split(",") if x]
    known = {"generate", "loglikelihood", "train_embedded", "train_1b"}
    if set(parts) - known:
        p.exit(2, f"error: unknown --parts {sorted(set(parts) - known)} (known: {sorted(known)})\n")

    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    name = torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or platform.machine()
    s = SMOKE if a.smoke else FULL
    peak = peak_flops(name, a.peak_tflops)
    versions = {m: __import__(m).__version__ for m in ("torch", "transformers", "peft", "accelerate")}
    report: dict = {"device": name, "versions": versions, "sizes": asdict(s), "peak_flops": peak,
                    "smoke": a.smoke, "results": {}, "seconds": {}}
    out = Path(a.out)
    t_all = time.perf_counter()
    for part in parts:
        log(f"{part} ...")
        t = time.perf_counter()
        if part == "generate":
            res = bench_generation(a.model, device, s)
        elif part == "loglikelihood":
            res = bench_loglikelihood(a.model, device, s)
        else:
            res = bench_training("embedded" if part == "train_embedded" else "1b", a.model, device, s, peak)
        report["results"][part] = res
        report["seconds"][part] = round(time.perf_counter() - t, 1)
        report["seconds"]["total"] = round(time.perf_counter() - t_all, 1)
        write(out, report)
        log(f"{part}: {json.dumps(res)}")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

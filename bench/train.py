"""Tokens/s of ``llmgen.training.train`` vs a plain HF ``Trainer`` on the same model, data and settings.

Both get the same tokenised prompt/answer features, the same padding collator, AdamW, a linear
schedule, gradient clipping at 1.0, fp32, no eval, no checkpoints. Each side first runs a short
warm-up (imports, lazy kernels) in this process; then the timed runs alternate (ours, HF, ours,
HF, ...) so that background load hits both alike, and the best run of each is reported.
Tokens are non-padding tokens fed to the model, counted in the collator for both.

    .venv/bin/python bench/train.py --model tiny --steps 30
    .venv/bin/python bench/train.py --model default --steps 10 --out docs/benchmarks/training.md
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def make_data(tok, n: int, answer_words: int, seed: int = 0):
    import random

    from llmgen.training.data import prompt_answer_dataset

    rng = random.Random(seed)
    words = "alpha beta gamma delta epsilon zeta theta kappa lambda sigma omega".split()
    recs = [{"prompt": f"Question {i}: list some words. Answer: ",
             "answer": " ".join(rng.choice(words) for _ in range(answer_words))} for i in range(n)]
    return prompt_answer_dataset(recs, tok, max_length=512)


def load(model_name: str, seed: int = 0):
    from llmgen.models import load_model, tiny_model

    if model_name == "tiny":
        return tiny_model(seed)
    model, tok = load_model(model_name)
    model.train()
    return model, tok


def run_ours(model_name, data, steps, bs, lr) -> tuple[float, float, float]:
    from llmgen.training import TrainConfig, train

    model, tok = load(model_name)
    with tempfile.TemporaryDirectory() as d:
        cfg = TrainConfig(output_dir=d, lr=lr, max_steps=steps, batch_size=bs, schedule="linear",
                          max_grad_norm=1.0, save_final=False, progress=False, log_every=steps)
        t = time.perf_counter()
        res = train(cfg, model=model, tokenizer=tok, train_dataset=data)
        wall = time.perf_counter() - t
    return res.tokens / wall, res.tokens, res.final_loss


def run_hf(model_name, data, steps, bs, lr) -> tuple[float, float, float]:
    from transformers import Trainer, TrainingArguments

    from llmgen.training.data import pad_collate

    model, tok = load(model_name)
    counted = [0]

    def collate(feats):
        batch = pad_collate(feats, tok.pad_token_id)
        counted[0] += int(batch["attention_mask"].sum())
        return batch

    with tempfile.TemporaryDirectory() as d:
        args = TrainingArguments(output_dir=d, per_device_train_batch_size=bs, learning_rate=lr, max_steps=steps,
                                 lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
                                 logging_steps=steps, save_strategy="no", report_to="none", use_cpu=True,
                                 dataloader_num_workers=0, seed=0, remove_unused_columns=False,
                                 disable_tqdm=True)
        trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=collate)
        t = time.perf_counter()
        out = trainer.train()
        wall = time.perf_counter() - t
    return counted[0] / wall, counted[0], out.training_loss


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny", help="tiny, default (SmolLM2-135M) or a model path")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--examples", type=int, default=256)
    p.add_argument("--answer-words", type=int, default=24)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=None, help="append a markdown section to this file")
    a = p.parse_args()

    import torch

    from llmgen.models import byte_tokenizer, load_tokenizer

    tok = byte_tokenizer() if a.model == "tiny" else load_tokenizer(a.model)  # no model load just for this
    data = make_data(tok, a.examples, a.answer_words)
    mean_len = sum(len(f["input_ids"]) for f in data) / len(data)
    run_ours(a.model, data, 3, a.batch_size, a.lr)  # warm-up both paths
    run_hf(a.model, data, 3, a.batch_size, a.lr)
    ours, hf = [], []
    for _ in range(a.repeats):
        ours.append(run_ours(a.model, data, a.steps, a.batch_size, a.lr))
        hf.append(run_hf(a.model, data, a.steps, a.batch_size, a.lr))
    best_ours, best_hf = max(r[0] for r in ours), max(r[0] for r in hf)
    lines = [
        f"### Training loop throughput: `{a.model}` on CPU",
        "",
        f"{a.steps} optimizer steps, batch {a.batch_size}, {len(data)} prompt/answer examples "
        f"(mean {mean_len:.0f} tokens), fp32, AdamW + linear schedule, clip 1.0; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
        f"load average {os.getloadavg()[0]:.1f} at the end. Best of {a.repeats} alternated runs.",
        "",
        "| loop | tokens/s (best) | tokens/s (all runs) | final loss |",
        "|---|---|---|---|",
        f"| llmgen.training.train | {best_ours:.0f} | {', '.join(f'{r[0]:.0f}' for r in ours)} | {ours[-1][2]:.4f} |",
        f"| transformers Trainer | {best_hf:.0f} | {', '.join(f'{r[0]:.0f}' for r in hf)} | {hf[-1][2]:.4f} (mean over run) |",
        "",
        f"Ratio llmgen / Trainer: **{best_ours / best_hf:.2f}** (target ≥ 0.90).",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if a.out:
        with open(a.out, "a", encoding="utf-8") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()

"""Chen et al. 2025, "Rethinking Fine-Tuning when Scaling Test-Time Compute": CE vs DCO(N).

Fine-tune one base model twice on math problems with direct answers, once with cross-entropy and
once with the pass@N-aware DCO loss, through the shared training loop. Every ``eval_every`` epochs
draw ``samples`` answers per test problem at T = 1 and record the pass@k curve (unbiased estimator and
the paper's block estimate with standard errors), plus the model's confidence in its greedy answer.
The paper's finding: CE keeps raising pass@1 while pass@N at large N stalls or falls, because the
model grows confident in wrong answers; DCO limits confidence on examples it already solves and
keeps pass@N higher.

Outputs in ``output_dir``: ``config.json``, ``results.json``, ``samples.jsonl``, ``passk.png``
(pass@k vs k, one panel per method, one line per epoch), ``passk_epochs.png`` (pass@1 and pass@N vs
epoch) and ``confidence.png`` (greedy-answer confidence vs correctness across epochs).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llmgen.errors import LlmgenError
from llmgen.evals.passk import default_ks, mean_pass_at_k, pass_blocks
from llmgen.evals.stats import standard_error
from llmgen.io import atomic_write_json, atomic_write_jsonl
from llmgen.math_answers import extract_answer, grade
from llmgen.math_tasks import MathProblem, direct_prompt, direct_target, generate_task, load_math

METHODS = ("ce", "dco")


@dataclass
class ConfidenceLimitingConfig:
    """One CE-vs-DCO comparison. ``task="generated"`` builds the offline arithmetic task; otherwise
    ``train_data``/``test_data`` point at MATH-format files or folders."""

    model: str = "default"
    output_dir: str = "runs/passn"
    task: str = "generated"
    train_data: str | None = None
    test_data: str | None = None
    n_train: int = 2000
    n_test: int = 100
    difficulty: int = 2
    task_seed: int = 0

    methods: tuple[str, ...] = METHODS
    dco_n: int = 16
    dco_threshold: float = 0.1
    dco_normalization: str = "token_mean"
    refill: bool = True  # re-score the train set each epoch and train only on examples with F >= threshold

    epochs: int = 4
    eval_every: int = 1  # epochs between evaluations (each block of epochs is one train() call)
    lr: float = 1e-4
    batch_size: int = 32
    schedule: str = "constant"
    warmup_steps: int = 0
    lora_r: int = 0
    max_length: int = 256
    seed: int = 0

    samples: int = 64
    ks: list[int] = field(default_factory=list)  # empty: 1, 2, 4, ... up to samples
    temperature: float = 1.0
    max_new_tokens: int = 8
    backend: str = "hf"  # "hf" scores the in-memory model; "vllm" saves each epoch and starts an engine
    eval_base: bool = True
    progress: bool = True

    def validate(self) -> None:
        if isinstance(self.dco_n, bool) or not isinstance(self.dco_n, int) or self.dco_n < 1:
            raise LlmgenError(f"dco_n (N) must be an integer >= 1, got {self.dco_n!r}")
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise LlmgenError(f"unknown method {bad[0] if bad else '(none)'!r} (known: {', '.join(METHODS)})")
        if self.samples < 1:
            raise LlmgenError(f"samples must be >= 1, got {self.samples}")
        too_big = [k for k in self.ks if k > self.samples]
        if too_big:
            raise LlmgenError(f"pass@{too_big[0]} needs at least {too_big[0]} samples per problem, got samples={self.samples}")
        if any(k < 1 for k in self.ks):
            raise LlmgenError("every k must be >= 1")
        if self.epochs < 1:
            raise LlmgenError(f"epochs must be >= 1, got {self.epochs}")
        if self.eval_every < 1:
            raise LlmgenError(f"eval_every must be >= 1 epoch, got {self.eval_every}")
        if self.backend not in ("hf", "vllm"):
            raise LlmgenError(f"unknown backend {self.backend!r} (known: hf, vllm)")
        if self.dco_normalization not in ("sum", "token_mean"):
            raise LlmgenError(f"unknown dco_normalization {self.dco_normalization!r} (use sum or token_mean)")
        if self.temperature <= 0:
            raise LlmgenError("pass@k sampling needs temperature > 0")
        if self.task != "generated" and not (self.train_data and self.test_data):
            raise LlmgenError("task other than 'generated' needs train_data and test_data (MATH-format paths)")

    def kvalues(self) -> list[int]:
        """The k of the pass@k curve: ``ks`` if given, else 1, 2, 4, ... up to ``samples``."""
        return sorted(set(self.ks)) if self.ks else default_ks(self.samples)


def eval_epochs(epochs: int, every: int) -> list[int]:
    """Epochs after which to evaluate: every ``every``-th and always the last."""
    return sorted({*range(every, epochs + 1, every), epochs})


# --- pass@k from a correctness matrix ------------------------------------------------------------

def passk_curve(correct: Sequence[Sequence[bool]], ks: Sequence[int]) -> dict[str, dict[str, float]]:
    """Per k: the unbiased pass@k averaged over problems, and the block estimate.

    The block estimate splits each problem's samples into disjoint blocks of k, scores a block 1
    if any sample in it is correct, and reports the mean and standard error over all blocks of all
    problems (every problem contributes the same number of blocks).
    """
    if not correct:
        raise LlmgenError("pass@k over an empty set of problems")
    import numpy as np

    ns = [len(c) for c in correct]
    cs = [sum(bool(x) for x in c) for c in correct]
    out: dict[str, dict[str, float]] = {}
    for k in ks:
        unbiased = mean_pass_at_k(ns, cs, k)  # raises if a problem has fewer than k samples
        blocks = np.concatenate([pass_blocks(c, k) for c in correct])
        out[str(k)] = {"unbiased": unbiased, "block": float(blocks.mean()), "block_se": standard_error(blocks),
                       "blocks": int(blocks.size)}
    return out


# --- evaluation ----------------------------------------------------------------------------------

def evaluate(backend, problems: Sequence[MathProblem], config: ConfidenceLimitingConfig,
             prompt_fn: Callable[[MathProblem], str] = direct_prompt, seed: int = 0) -> tuple[dict, list[dict]]:
    """pass@k curve and greedy-answer confidence on ``problems``: ``(summary, per-problem rows)``."""
    from llmgen.backends.base import SamplingConfig

    prompts = [prompt_fn(p) for p in problems]
    stop = ("\n",)
    sampled = backend.generate(prompts, SamplingConfig(n=config.samples, temperature=config.temperature,
                                                       max_tokens=config.max_new_tokens, stop=stop, seed=seed))
    greedy = backend.generate(prompts, SamplingConfig(n=1, temperature=0.0, max_tokens=config.max_new_tokens,
                                                      stop=stop, seed=seed))
    correct, rows = [], []
    for p, comps, (g,) in zip(problems, sampled, greedy, strict=True):
        ok = [grade(c.text, p.answer) for c in comps]
        correct.append(ok)
        confidence = math.exp(sum(g.logprobs)) if g.logprobs else 0.0
        rows.append({"id": p.id, "answer": p.answer, "num_correct": sum(ok), "num_samples": len(ok),
                     "sample_answers": [extract_answer(c.text) for c in comps],
                     "greedy": g.text, "greedy_correct": grade(g.text, p.answer), "greedy_confidence": confidence})
    curve = passk_curve(correct, config.kvalues())
    wrong = [r["greedy_confidence"] for r in rows if not r["greedy_correct"]]
    right = [r["greedy_confidence"] for r in rows if r["greedy_correct"]]
    summary = {
        "passk": curve,
        "greedy_accuracy": len(right) / len(rows),
        "confidence_correct": sum(right) / len(right) if right else None,
        "confidence_incorrect": sum(wrong) / len(wrong) if wrong else None,
        "overconfident_wrong": sum(c > 0.5 for c in wrong) / len(rows),
        "distinct_answers": sum(len(set(r["sample_answers"])) for r in rows) / len(rows),
    }
    return summary, rows


# --- training ------------------------------------------------------------------------------------

def problem_records(problems: Sequence[MathProblem]) -> list[dict[str, str]]:
    return [{"prompt": direct_prompt(p), "answer": direct_target(p)} for p in problems]


def loss_setup(method: str, config: ConfidenceLimitingConfig) -> tuple[str, dict[str, Any]]:
    if method == "ce":
        return "ce", {}
    return "dco", {"N": config.dco_n, "threshold": config.dco_threshold, "normalization": config.dco_normalization}


def refill_features(model, tokenizer, features: list[dict], n: int, threshold: float,
                    batch_size: int = 64) -> list[dict]:
    """Training examples whose current F(N, p̂) is at or above ``threshold`` (the others would be
    dropped from their batches anyway, so batches are refilled with useful examples)."""
    from llmgen.dco import sequence_weights
    from llmgen.training.data import pad_collate

    kept: list[dict] = []
    model.eval()
    for start in range(0, len(features), batch_size):
        chunk = features[start : start + batch_size]
        batch = pad_collate(chunk, tokenizer.pad_token_id)
        device = next(model.parameters()).device
        weights = sequence_weights(model, {k: v.to(device) for k, v in batch.items()}, n)
        kept += [f for f, w in zip(chunk, weights.tolist(), strict=True) if w >= threshold]
    return kept


def train_epoch(model, tokenizer, features: list[dict], method: str, epoch: int,
                config: ConfidenceLimitingConfig, run_dir: Path, n_epochs: int = 1) -> tuple[Any, dict[str, Any]]:
    """``n_epochs`` epochs of ``method`` ending at ``epoch``, as one call of the shared training
    loop: ``(trained model, summary)``.

    Each block of epochs between evaluations is its own ``train()`` call, so the DCO refill can
    re-score the data in between; AdamW's moments restart with each call, for CE and DCO alike."""
    from llmgen.training import TrainConfig, train

    loss, args = loss_setup(method, config)
    data = features
    if method == "dco" and config.refill:
        data = refill_features(model, tokenizer, features, config.dco_n, config.dco_threshold)
        if not data:
            return model, {"skipped": True, "kept": 0}
    cfg = TrainConfig(loss=loss, loss_args=args, lr=config.lr, epochs=n_epochs, batch_size=config.batch_size,
                      schedule=config.schedule, warmup_steps=config.warmup_steps if epoch == n_epochs else 0,
                      lora_r=config.lora_r, max_length=config.max_length, seed=config.seed + epoch,
                      output_dir=str(run_dir / "train" / method / f"epoch{epoch}"), save_final=False,
                      progress=False)
    result = train(cfg, model=model, tokenizer=tokenizer, train_dataset=data)
    logged = [r for r in result.history if "loss" in r]
    info: dict[str, Any] = {"kept": len(data), "steps": result.steps, "final_loss": result.final_loss}
    for key in ("loss", "ce", "dco", "dco_weight", "dco_dropped", "p_hat"):
        values = [r[key] for r in logged if key in r]
        if values:
            info[f"mean_{key}"] = sum(values) / len(values)
    return result.model, info


def _backend_for(model, tokenizer, config: ConfidenceLimitingConfig, save_dir: Path):
    from llmgen.backends import get_backend
    from llmgen.backends.hf import HFBackend

    if config.backend == "hf":
        return HFBackend("in-memory", model_obj=model, tokenizer_obj=tokenizer, batch_size=16)
    target = copy.deepcopy(model).merge_and_unload() if hasattr(model, "merge_and_unload") else model
    target.save_pretrained(save_dir, safe_serialization=True)
    tokenizer.save_pretrained(save_dir)
    return get_backend("vllm", str(save_dir))


def load_problems(config: ConfidenceLimitingConfig) -> tuple[list[MathProblem], list[MathProblem]]:
    if config.task == "generated":
        return generate_task(config.n_train, config.n_test, config.difficulty, config.task_seed)
    train = load_math(config.train_data, split="train", limit=config.n_train or None)
    test = load_math(config.test_data, split="test", limit=config.n_test or None)
    return train, test


# --- the run -------------------------------------------------------------------------------------

def run(config: ConfidenceLimitingConfig) -> dict[str, Any]:
    """Train CE and DCO(N) from the same base model, evaluating pass@k every ``eval_every`` epochs."""
    config.validate()
    import torch

    from llmgen.models import load_model
    from llmgen.training.data import prompt_answer_dataset

    out = Path(config.output_dir)
    train_problems, test_problems = load_problems(config)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "config.json", asdict(config))

    results: dict[str, Any] = {"config": asdict(config), "ks": config.kvalues(), "n_train": len(train_problems),
                               "n_test": len(test_problems), "methods": {}}
    samples: list[dict] = []
    base_eval: tuple[dict, list[dict]] | None = None
    for method in config.methods:
        torch.manual_seed(config.seed)
        model, tok = load_model(config.model)
        features = prompt_answer_dataset(problem_records(train_problems), tok, max_length=config.max_length,
                                         name="train problems")
        history: list[dict[str, Any]] = []
        stops = eval_epochs(config.epochs, config.eval_every)
        for epoch in ([0] if config.eval_base else []) + stops:
            t0 = time.time()
            train_info: dict[str, Any] = {}
            if epoch > 0:
                model.train()
                n_epochs = epoch - (stops[stops.index(epoch) - 1] if stops.index(epoch) else 0)
                model, train_info = train_epoch(model, tok, features, method, epoch, config, out, n_epochs)
            model.eval()
            model.config.use_cache = True  # the loop turns the KV cache off for training
            if epoch == 0 and base_eval is not None:
                summary, rows = base_eval
            else:
                backend = _backend_for(model, tok, config, out / "checkpoints" / f"{method}-epoch{epoch}")
                summary, rows = evaluate(backend, test_problems, config, seed=config.seed + 1000 * epoch)
                if config.backend == "vllm":
                    backend.close()
                if epoch == 0:
                    base_eval = (summary, rows)
            summary = {"epoch": epoch, **summary, "train": train_info, "seconds": round(time.time() - t0, 1)}
            history.append(summary)
            samples += [{"method": method, "epoch": epoch, **r} for r in rows]
            if config.progress:
                pk = summary["passk"]
                last = str(config.kvalues()[-1])
                print(f"[passn] {method} epoch {epoch}: pass@1 {pk['1']['unbiased']:.3f} "
                      f"pass@{last} {pk[last]['unbiased']:.3f} greedy acc {summary['greedy_accuracy']:.3f} "
                      f"({summary['seconds']}s)", flush=True)
        results["methods"][method] = history
        del model

    results["comparison"] = compare(results, config)
    atomic_write_jsonl(out / "samples.jsonl", samples)
    results["plots"] = plot_all(results, samples, out)
    atomic_write_json(out / "results.json", results)
    return results


def compare(results: dict[str, Any], config: ConfidenceLimitingConfig) -> dict[str, Any]:
    """The paper's two claims in numbers: how pass@1 and pass@N move under CE, and DCO vs CE."""
    out: dict[str, Any] = {}
    n = str(config.dco_n) if str(config.dco_n) in map(str, config.kvalues()) else str(config.kvalues()[-1])
    big = str(config.kvalues()[-1])
    for method, hist in results["methods"].items():
        out[method] = {"pass@1_by_epoch": [h["passk"]["1"]["unbiased"] for h in hist],
                       f"pass@{n}_by_epoch": [h["passk"][n]["unbiased"] for h in hist],
                       f"pass@{big}_by_epoch": [h["passk"][big]["unbiased"] for h in hist],
                       "epochs": [h["epoch"] for h in hist]}
    if "ce" in out and "dco" in out:
        out[f"dco_minus_ce_pass@{n}"] = [d - c for d, c in zip(out["dco"][f"pass@{n}_by_epoch"],
                                                                 out["ce"][f"pass@{n}_by_epoch"], strict=True)]
    return out


# --- plots ---------------------------------------------------------------------------------------

def _title(method: str, n: int) -> str:
    return "CE" if method == "ce" else f"DCO (N={n})"


def plot_all(results: dict[str, Any], samples: list[dict], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = results["ks"]
    methods = list(results["methods"])
    paths = []

    fig, axes = plt.subplots(1, len(methods), figsize=(5 * len(methods), 4), sharey=True, squeeze=False)
    for ax, method in zip(axes[0], methods, strict=True):
        hist = results["methods"][method]
        cmap = plt.get_cmap("viridis")
        for i, h in enumerate(hist):
            ys = [h["passk"][str(k)]["block"] for k in ks]
            es = [h["passk"][str(k)]["block_se"] for k in ks]
            color = cmap(i / max(1, len(hist) - 1))
            ax.errorbar(ks, ys, yerr=[0 if math.isnan(e) else e for e in es], marker="o", ms=3, capsize=2,
                        color=color, label=f"epoch {h['epoch']}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("k")
        ax.set_title(_title(method, results["config"]["dco_n"]))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("pass@k (block estimate ± s.e.)")
    fig.tight_layout()
    fig.savefig(out / "passk.png", dpi=120)
    plt.close(fig)
    paths.append("passk.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    n = results["config"]["dco_n"]
    show = [k for k in (1, n, ks[-1]) if k in ks]
    for method, style in zip(methods, ("-", "--"), strict=False):
        hist = results["methods"][method]
        for k in dict.fromkeys(show):
            ax.plot([h["epoch"] for h in hist], [h["passk"][str(k)]["unbiased"] for h in hist], style, marker="o",
                    label=f"{method} pass@{k}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("pass@k (unbiased)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "passk_epochs.png", dpi=120)
    plt.close(fig)
    paths.append("passk_epochs.png")

    paths.append(plot_confidence(samples, methods, out / "confidence.png", n))
    return paths


def plot_confidence(samples: list[dict], methods: Sequence[str], path: Path, n: int) -> str:
    """Greedy-answer confidence per test problem and epoch, green if correct and red if not; lines
    give the mean confidence of correct and of incorrect answers. Overconfidence shows as red
    points climbing towards 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rng = np.random.default_rng(0)
    fig, axes = plt.subplots(1, len(methods), figsize=(5 * len(methods), 4), sharey=True, squeeze=False)
    for ax, method in zip(axes[0], methods, strict=True):
        rows = [r for r in samples if r["method"] == method]
        epochs = sorted({r["epoch"] for r in rows})
        for ok, color in ((True, "tab:green"), (False, "tab:red")):
            sel = [r for r in rows if r["greedy_correct"] == ok]
            x = np.array([r["epoch"] for r in sel], dtype=float) + rng.uniform(-0.2, 0.2, len(sel))
            ax.scatter(x, [r["greedy_confidence"] for r in sel], s=6, alpha=0.4, color=color,
                       label="correct" if ok else "incorrect")
            means = [np.mean([r["greedy_confidence"] for r in sel if r["epoch"] == e] or [np.nan]) for e in epochs]
            ax.plot(epochs, means, color=color, lw=2)
        ax.set_title(_title(method, n))
        ax.set_xlabel("epoch")
        ax.set_xticks(epochs)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("p(greedy answer)")
    axes[0][0].legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path.name

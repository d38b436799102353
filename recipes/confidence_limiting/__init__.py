"""Chen et al. 2025, "Rethinking Fine-Tuning when Scaling Test-Time Compute": CE vs DCO(N).

Fine-tune one base model twice on math problems with direct answers, once with cross-entropy and
once with the pass@N-aware DCO loss, each as one run of the shared training loop (one optimizer,
one schedule). DCO scores every batch with the current weights and refills it past examples with
F <= 0.1, as the reference does. Every ``eval_every`` epochs' worth of steps draw ``samples`` answers
per test problem at T = 1 and record the pass@k curve (unbiased estimator and the paper's block
estimate with its standard error over dataset-level replicates), plus the model's confidence in
its greedy answer. The generated task's training problems are never ``math_generated_d*`` eval
problems (``llmgen.tasks.math.is_test_problem``).
The paper's finding: CE keeps raising pass@1 while pass@N at large N stalls or falls, because the
model grows confident in wrong answers; DCO limits confidence on examples it already solves and
keeps pass@N higher.

Outputs in ``output_dir``: ``config.json``, ``results.json``, ``samples.jsonl``, ``passk.png``
(pass@k vs k, one panel per method, one line per epoch), ``passk_epochs.png`` (pass@1 and pass@N vs
epoch) and ``confidence.png`` (greedy-answer confidence vs correctness across epochs).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from llmgen.backends import backend_on_model
from llmgen.config import EvalSettings, check_fixed, dump_config
from llmgen.errors import LlmgenError
from llmgen.evals.passk import block_pass_at_n, default_ks, mean_pass_at_k
from llmgen.io import atomic_write_json, atomic_write_jsonl, safe_filename
from llmgen.tasks.math import MathProblem, direct_prompt, direct_target, generate_task, load_math
from llmgen.tasks.math_answers import GRADINGS
from llmgen.training.config import TrainConfig
from llmgen.training.losses.dco import check_normalization

METHODS = ("ce", "dco")
EVAL_ROWS = 64  # sampled sequences decoded together by the HF backend


@dataclass
class ConfidenceLimitingConfig:
    """One CE-vs-DCO comparison. ``task="generated"`` builds the offline arithmetic task; otherwise
    ``train_data``/``test_data`` point at MATH-format files or folders."""

    model: str = "default"
    output_dir: str = "runs/confidence_limiting"
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
    dco_normalization: str = "example_mean"  # the reference's mean of F·NLL/|y|; or token_mean, sum
    refill: bool = True  # score each batch with the current weights, drop F <= threshold, refill
    # pass@k grading: "boxed" (the reference notebook's: the last \boxed{} answer, exact after
    # normalize_final_answer) or "lenient" (any final-answer form, numeric equivalence); None: "boxed"
    # for MATH data, "lenient" for the generated task (its direct answers are never boxed)
    grading: str | None = None

    eval_every: int = 1  # epochs' worth of optimizer steps between evaluations (one train() call)
    # train.epochs passes over the candidates, one AdamW, constant lr; train.seed also seeds sampling
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        lr=1e-4, epochs=4.0, batch_size=32, schedule="constant", max_length=256, save_final=False))
    # eval.num_samples answers per test problem at eval.temperature (pass@k up to it); eval.backend
    # "hf" scores the in-memory model, "vllm" saves each epoch and starts an engine
    eval: EvalSettings = field(default_factory=lambda: EvalSettings(num_samples=64, temperature=1.0,
                                                                    max_new_tokens=8))
    ks: list[int] = field(default_factory=list)  # empty: 1, 2, 4, ... up to eval.num_samples
    eval_base: bool = True
    progress: bool = True

    FIXED_KEYS: ClassVar[tuple[str, ...]] = (
        *(f"train.{n}" for n in ("model", "data", "data_format", "prompt_field", "answer_field", "text_field",
                                 "split", "loss", "loss_args", "eval_every", "output_dir", "resume", "progress",
                                 "save_final")),
        "eval.top_p", "eval.limit", "eval.batch_size")  # n_test sizes the test set; HF batch EVAL_ROWS

    def validate(self) -> None:
        if isinstance(self.dco_n, bool) or not isinstance(self.dco_n, int) or self.dco_n < 1:
            raise LlmgenError(f"dco_n (N) must be an integer >= 1, got {self.dco_n!r}")
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise LlmgenError(f"unknown method {bad[0] if bad else '(none)'!r} (known: {', '.join(METHODS)})")
        check_fixed(self)
        self.train.validate()
        self.eval.validate(task_budget=False)  # the math task is built with this budget
        samples = self.eval.num_samples
        too_big = [k for k in self.ks if k > samples]
        if too_big:
            raise LlmgenError(f"pass@{too_big[0]} needs at least {too_big[0]} samples per problem, "
                              f"got eval.num_samples={samples}")
        if any(k < 1 for k in self.ks):
            raise LlmgenError("every k must be >= 1")
        if self.train.epochs < 1:
            raise LlmgenError(f"train.epochs must be >= 1, got {self.train.epochs}")
        if self.eval_every < 1:
            raise LlmgenError(f"eval_every must be >= 1 epoch, got {self.eval_every}")
        check_normalization(self.dco_normalization)
        if self.grading not in (None, *GRADINGS):
            raise LlmgenError(f"grading must be one of {', '.join(GRADINGS)}, got {self.grading!r}")
        if self.eval.temperature <= 0:
            raise LlmgenError("pass@k sampling needs temperature > 0")
        if self.task != "generated" and not (self.train_data and self.test_data):
            raise LlmgenError("task other than 'generated' needs train_data and test_data (MATH-format paths)")

    def grading_rule(self) -> str:
        """The grading in force: ``grading``, else the reference's for MATH data, lenient for the generated task."""
        return self.grading or ("lenient" if self.task == "generated" else "boxed")

    def kvalues(self) -> list[int]:
        """The k of the pass@k curve: ``ks`` if given, else 1, 2, 4, ... up to ``eval.num_samples``."""
        return sorted(set(self.ks)) if self.ks else default_ks(self.eval.num_samples)


# --- pass@k from a correctness matrix ------------------------------------------------------------

def passk_curve(correct: Sequence[Sequence[bool]], ks: Sequence[int]) -> dict[str, dict[str, float]]:
    """Per k: the unbiased pass@k averaged over problems, and the paper's block estimate.

    The block estimate (``evals.passk.block_pass_at_n``) cuts each problem's samples into
    ``samples // k`` disjoint blocks; each block index gives one dataset-level pass@k replicate,
    and ``block_se`` is the standard error over those replicates, as in the reference notebook.
    """
    if not correct:
        raise LlmgenError("pass@k over an empty set of problems")
    ns = [len(c) for c in correct]
    cs = [sum(bool(x) for x in c) for c in correct]
    out: dict[str, dict[str, float]] = {}
    for k in ks:
        unbiased = mean_pass_at_k(ns, cs, k)  # raises if a problem has fewer than k samples
        block, block_se, replicates = block_pass_at_n(correct, k)
        out[str(k)] = {"unbiased": unbiased, "block": block, "block_se": block_se, "replicates": replicates}
    return out


# --- evaluation ----------------------------------------------------------------------------------

def eval_config(config: ConfidenceLimitingConfig, seed: int, greedy: bool = False):
    """The runner's sampling settings: ``samples`` answers at ``temperature``, or one greedy answer."""
    from llmgen.evaluate import EvalConfig

    if greedy:
        return EvalConfig.from_settings(config.eval, model=config.model, num_samples=1, temperature=0.0, seed=seed,
                                        ks=[1], cache=None)
    return EvalConfig.from_settings(config.eval, model=config.model, seed=seed, ks=config.kvalues(), cache=None)


def evaluate(backend, problems: Sequence[MathProblem], config: ConfidenceLimitingConfig, seed: int = 0,
             name: str = "eval", cache=None) -> tuple[dict, list[dict], dict]:
    """pass@k curve and greedy-answer confidence on ``problems`` through the runner:
    ``(summary, per-problem rows, runner metrics and uncertainty)``.

    The problems form one ``tasks.math_task`` (the same prompt and grading as ``llmgen eval --tasks
    math_generated_d*``); ``evaluate_tasks`` draws the samples and greedy answers through the request
    cache and gives pass@k per problem (unbiased estimator); the block estimate and the confidence
    numbers are computed here from the runner's rows."""
    from llmgen.cache import RequestCache
    from llmgen.evaluate import evaluate_tasks
    from llmgen.tasks import math_task

    cache = cache if cache is not None else RequestCache(None)
    task = math_task(name, [{"problem": p.problem, "answer": p.answer} for p in problems],
                     max_tokens=config.eval.max_new_tokens,
                     extract="math_boxed" if config.grading_rule() == "boxed" else "math")
    results, unc, sampled, _ = evaluate_tasks(backend, [task], eval_config(config, seed), cache)
    _, _, greedy, _ = evaluate_tasks(backend, [task], eval_config(config, seed, greedy=True), cache)
    correct, rows = [], []
    for p, s, g in zip(problems, sampled, greedy, strict=True):
        correct.append(s["correct"])
        confidence = math.exp(g["response_logprobs"][0]) if g["response_tokens"][0] else 0.0
        rows.append({**s, "id": p.id, "answer": p.answer, "num_correct": sum(s["correct"]),
                     "num_samples": len(s["correct"]), "sample_answers": s["filtered"], "greedy": g["responses"][0],
                     "greedy_correct": bool(g["correct"][0]), "greedy_confidence": confidence})
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
    metrics = {**results[name], **{k: v for k, v in summary.items() if k != "passk"}}
    return summary, rows, {"metrics": metrics, "uncertainty": unc[name]}


# --- training ------------------------------------------------------------------------------------

def problem_records(problems: Sequence[MathProblem], boxed: bool = False) -> list[dict[str, str]]:
    """Training records; with ``boxed`` (the notebook's grading reads only a ``\\boxed{}`` answer) the
    direct answer is written ``\\boxed{answer}``, so the trained model answers in the graded form."""
    return [{"prompt": direct_prompt(p), "answer": f" \\boxed{{{p.answer}}}" if boxed else direct_target(p)}
            for p in problems]


def loss_setup(method: str, config: ConfidenceLimitingConfig) -> tuple[str, dict[str, Any]]:
    if method == "ce":
        return "ce", {}
    # with the refill the threshold acts before the loss (the reference: every example reaching the
    # loss is kept, weighted by F, divided by the batch size); without it, inside the loss
    args: dict[str, Any] = {"N": config.dco_n, "normalization": config.dco_normalization}
    return "dco", args if config.refill else {**args, "threshold": config.dco_threshold}


def train_method(model, tokenizer, features: list[dict], method: str, config: ConfidenceLimitingConfig,
                 run_dir: Path, on_eval: Callable[[Any, int], None]) -> tuple[Any, list[dict]]:
    """All ``config.train.epochs`` of ``method`` as one call of the shared training loop (one AdamW, one
    schedule), calling ``on_eval(model, step)`` every ``eval_every`` epochs' worth of steps and at
    the end: ``(trained model, the loop's metric rows)``.

    DCO with ``refill`` scores every candidate batch with the current weights, drops examples
    with F <= ``dco_threshold`` and refills the batch (``llmgen.recipes.confidence_limiting.refill.refill_keep``), as the
    reference does for each global batch; ``epochs`` then counts passes over the candidates."""
    from llmgen.recipes.confidence_limiting.refill import refill_keep
    from llmgen.training import train
    from llmgen.training.data import batches_per_epoch

    loss, args = loss_setup(method, config)
    keep = refill_keep(config.dco_n, config.dco_threshold) if method == "dco" and config.refill else None
    steps_per_epoch = batches_per_epoch(len(features), config.train.batch_size, config.train.grad_accum)
    cfg = replace(config.train, loss=loss, loss_args=args, eval_every=steps_per_epoch * config.eval_every,
                  output_dir=str(run_dir / "train" / safe_filename(method)), save_final=False, progress=False)

    def evaluate_at(model, step: int) -> None:
        model.config.use_cache = True  # the loop turns the KV cache off for training
        try:
            on_eval(model, step)
        finally:
            model.config.use_cache = False

    result = train(cfg, model=model, tokenizer=tokenizer, train_dataset=features, eval_fn=evaluate_at, keep_fn=keep)
    return result.model, [r for r in result.history if "loss" in r]


def train_window(rows: Sequence[dict], after: int, upto: int) -> dict[str, Any]:
    """Training numbers of the steps in (``after``, ``upto``]: count, means of the logged parts, and
    the DCO refill's running count of dropped candidates."""
    window = [r for r in rows if after < r["step"] <= upto]
    info: dict[str, Any] = {"step": upto, "steps": len(window)}
    for key in ("loss", "ce", "dco", "dco_weight", "dco_dropped", "p_hat", "lr"):
        values = [r[key] for r in window if key in r]
        if values:
            info[f"mean_{key}"] = sum(values) / len(values)
    if window and "refill_dropped" in window[-1]:
        info["refill_dropped"] = window[-1]["refill_dropped"]
    return info


def _backend_for(model, tokenizer, config: ConfidenceLimitingConfig, save_dir: Path):
    # The HF backend batches requests with all their samples; one problem per batch lets its
    # samples share the prompt's forward pass (HFBackend._prefill's common prefix) instead of
    # 16 different prompts each run num_samples times.
    extra = {"batch_size": max(1, EVAL_ROWS // config.eval.num_samples)} if config.eval.backend == "hf" else {}
    return backend_on_model(config.eval.backend, model, tokenizer, save_dir, dtype=config.train.model_dtype, **extra)


def load_problems(config: ConfidenceLimitingConfig) -> tuple[list[MathProblem], list[MathProblem]]:
    if config.task == "generated":
        return generate_task(config.n_train, config.n_test, config.difficulty, config.task_seed)
    train = load_math(config.train_data, split="train", limit=config.n_train or None)
    test = load_math(config.test_data, split="test", limit=config.n_test or None)
    return train, test


def eval_name(method: str, epoch: float) -> str:
    """The evaluation's name in results.json and samples.jsonl: one per method and epoch."""
    return f"{method}/epoch{epoch}"


class Measurements:
    """The evaluation callback of one method's run: pass@k and confidence at a training step.

    Called with step 0 before training and by the loop every ``eval_every`` epochs' worth of
    steps; ``rows`` holds one summary per call, ``samples`` the per-problem rows, ``results`` /
    ``uncertainty`` the runner's metrics per evaluation (``eval_name``). ``shared`` keeps the step-0
    evaluation so that every method starts from the same measured base; ``cache`` is the request
    cache the evaluations go through (a rerun of the same run resumes from it)."""

    def __init__(self, config: ConfidenceLimitingConfig, problems: Sequence[MathProblem], tokenizer, out: Path,
                 method: str, steps_per_epoch: int, shared: dict[int, tuple[dict, list[dict], dict]],
                 cache=None) -> None:
        self.config, self.problems, self.tokenizer, self.out, self.method = config, problems, tokenizer, out, method
        self.steps_per_epoch, self.shared, self.cache = steps_per_epoch, shared, cache
        self.rows: list[dict[str, Any]] = []
        self.samples: list[dict] = []
        self.results: dict[str, dict] = {}
        self.uncertainty: dict[str, dict] = {}

    def __call__(self, model, step: int) -> None:
        config, t0 = self.config, time.time()
        epoch = round(step / self.steps_per_epoch, 4)
        epoch = int(epoch) if epoch == int(epoch) else epoch
        name = eval_name(self.method, epoch)
        if step == 0 and 0 in self.shared:
            summary, rows, runner = self.shared[0]
        else:
            backend = _backend_for(model, self.tokenizer, config, self.out / "checkpoints" / safe_filename(f"{self.method}-step{step}"))
            summary, rows, runner = evaluate(backend, self.problems, config, seed=config.train.seed + step, name=name,
                                             cache=self.cache)
            if config.eval.backend == "vllm":
                backend.close()
            if step == 0:
                self.shared[0] = (summary, rows, runner)
        self.rows.append({"epoch": epoch, "step": step, **summary, "seconds": round(time.time() - t0, 1)})
        self.samples += [{**r, "task": name, "method": self.method, "epoch": epoch} for r in rows]
        self.results[name], self.uncertainty[name] = runner["metrics"], runner["uncertainty"]
        if config.progress:
            pk, last = summary["passk"], str(config.kvalues()[-1])
            print(f"[confidence-limiting] {self.method} epoch {epoch}: pass@1 {pk['1']['unbiased']:.3f} "
                  f"pass@{last} {pk[last]['unbiased']:.3f} greedy acc {summary['greedy_accuracy']:.3f} "
                  f"({self.rows[-1]['seconds']}s)", file=sys.stderr, flush=True)


# --- the run -------------------------------------------------------------------------------------

def run(config: ConfidenceLimitingConfig) -> dict[str, Any]:
    """Train CE and DCO(N) from the same base model, evaluating pass@k every ``eval_every`` epochs.

    ``results.json`` is the one results schema (``llmgen.results``): one evaluation per method and
    epoch (``eval_name``), beside the recipe's pass@k curves (``methods``) and ``comparison``."""
    config.validate()
    import torch

    from llmgen.cache import RequestCache
    from llmgen.models import load_model
    from llmgen.results import results_record
    from llmgen.training.data import batches_per_epoch, prompt_answer_dataset

    t0 = time.time()
    out = Path(config.output_dir)
    train_problems, test_problems = load_problems(config)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "config.json", dump_config(config))

    extra: dict[str, Any] = {"ks": config.kvalues(), "n_train": len(train_problems), "n_test": len(test_problems),
                             "methods": {}}
    samples: list[dict] = []
    evals: dict[str, dict] = {}
    unc: dict[str, dict] = {}
    shared: dict[int, tuple[dict, list[dict], dict]] = {}  # the base model's evaluation, shared by the methods
    cache = RequestCache(out / "requests.sqlite")  # a rerun of this run folder resumes from its requests
    try:
        for method in config.methods:
            torch.manual_seed(config.train.seed)
            model, tok = load_model(config.model)
            features = prompt_answer_dataset(problem_records(train_problems, config.grading_rule() == "boxed"), tok, max_length=config.train.max_length,
                                             name="train problems")
            history = Measurements(config, test_problems, tok, out, method,
                                   batches_per_epoch(len(features), config.train.batch_size, config.train.grad_accum),
                                   shared, cache)
            if config.eval_base:
                model.eval()
                history(model, 0)
            model.train()
            model, rows = train_method(model, tok, features, method, config, out, history)
            prev = 0
            for h in history.rows:
                h["train"] = train_window(rows, prev, h["step"]) if h["step"] else {}
                prev = h["step"]
            extra["methods"][method] = history.rows
            samples += history.samples
            evals.update(history.results)
            unc.update(history.uncertainty)
            del model
        cache_stats = {"hits": cache.hits, "misses": cache.misses, "path": str(cache.path)}
    finally:
        cache.close()

    extra["comparison"] = compare(extra | {"config": dump_config(config)}, config)
    atomic_write_jsonl(out / "samples.jsonl", samples)
    extra["plots"] = plot_all(extra | {"config": dump_config(config)}, samples, out)
    results = results_record(
        config=dump_config(config), model=config.model, backend={"name": config.eval.backend, "model": config.model},
        seed=config.train.seed, timings={"total_s": round(time.time() - t0, 2)}, cache=cache_stats, results=evals,
        uncertainty=unc, n_samples={n: len(test_problems) for n in evals},
        tasks={n: {"name": n, "output_type": "generate", "metrics": ["exact_match", "pass@k"],
                   "num_examples": len(test_problems), "description": "the recipe's test problems"} for n in evals},
        extra=extra)
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
        # DCO's refill can end its run early (fewer optimizer steps): compare at the epochs both measured
        ce_at = dict(zip(out["ce"]["epochs"], out["ce"][f"pass@{n}_by_epoch"], strict=True))
        dco_at = dict(zip(out["dco"]["epochs"], out["dco"][f"pass@{n}_by_epoch"], strict=True))
        common = [e for e in out["dco"]["epochs"] if e in ce_at]
        out["compared_epochs"] = common
        out[f"dco_minus_ce_pass@{n}"] = [dco_at[e] - ce_at[e] for e in common]
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

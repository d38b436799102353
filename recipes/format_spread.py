"""FormatSpread (Sclar et al., ICLR 2024): how much does accuracy move with the prompt's format?

``run(config)`` samples (or reloads) a set of plausible formats for a classification task, then
either evaluates every format on every example (``mode="exhaustive"``) or spends a budget of E
evaluations with a Thompson-sampling (or UCB) bandit to find the best and worst formats. It writes
a run folder: ``config.json``, ``formats.json`` (reusable across models), ``results.json``,
``samples.jsonl`` and ``accuracy_histogram.png``.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from llmgen.classification_tasks import ClassificationTask, Example, load_classification_task, task_summary
from llmgen.errors import LlmgenError
from llmgen.evals.format_spread import (
    atomic_perturbations,
    bandit_spread,
    check_budget,
    exact_prefix_matching,
    exhaustive_spread,
    probability_ranking,
)
from llmgen.formats import Format, load_formats, sample_formats, save_formats
from llmgen.io import atomic_write_json, atomic_write_jsonl

MODES = ("thompson", "ucb", "exhaustive")
METRICS = ("probability_ranking", "exact_prefix_matching")


@dataclass
class FormatSpreadConfig:
    model: str = "default"
    backend: str = "hf"
    task: str = "sentiment"  # a built-in task, an SNI task .json or a .jsonl file
    num_formats: int = 10  # formats in the set, the original included
    shots: int = 1
    limit: int | None = 100  # evaluation examples per format (None: all that remain after the demos)
    num_generated: int = 300  # examples generated for a built-in task
    mode: str = "thompson"
    budget: int = 400  # E: evaluations the bandit may spend (the original's full run is not counted)
    batch: int = 20  # B: examples per arm pull
    metric: str = "probability_ranking"
    normalize: bool = False  # length-normalise probability ranking (the reference does not)
    chat: bool = False
    max_new_tokens: int = 10
    demos_from: str = "instances"  # "instances" (the paper) or "task" (e.g. SNI Positive Examples)
    formats_file: str | None = None  # reuse this set if it exists, else write the sampled set there
    seed: int = 0
    dtype: str = "float32"
    output_dir: str = "runs/format_spread"


class FormatEvaluator:
    """Scores examples under a format through a backend, batching each call; keeps the records."""

    def __init__(self, backend, task: ClassificationTask, formats: list[Format], demos: list[Example],
                 examples: list[Example], metric: str = "probability_ranking", chat: bool = False,
                 normalize: bool = False, max_new_tokens: int = 10) -> None:
        self.backend, self.task, self.formats = backend, task, formats
        self.demos, self.examples = demos, examples
        self.metric, self.chat, self.normalize, self.max_new_tokens = metric, chat, normalize, max_new_tokens
        self.records: list[dict] = []

    def prompt(self, arm: int, example: Example) -> str:
        text = self.task.prompt(self.formats[arm], self.demos, example)
        return self.backend.format_prompt(text, chat=self.chat)

    def __call__(self, arm: int, start: int, stop: int) -> list[bool]:
        from llmgen.backends import SamplingConfig

        fmt, exs = self.formats[arm], self.examples[start:stop]
        prompts = [self.prompt(arm, ex) for ex in exs]
        golds = [self.task.gold(ex, fmt) for ex in exs]
        if self.metric == "probability_ranking":
            answers = self.task.answers(fmt)
            res = self.backend.loglikelihood([(p, a) for p in prompts for a in answers])
            preds = []
            for k in range(len(prompts)):
                row = res[k * len(answers):(k + 1) * len(answers)]
                best = probability_ranking([r.logprob for r in row], [r.num_tokens for r in row], self.normalize)
                preds.append(answers[best])
            correct = [p == g for p, g in zip(preds, golds, strict=True)]
        else:
            outs = self.backend.generate(prompts, SamplingConfig(temperature=0.0, max_tokens=self.max_new_tokens))
            preds = [o[0].text for o in outs]
            correct = [exact_prefix_matching(p, g) for p, g in zip(preds, golds, strict=True)]
        for i, (p, pred, g, c) in enumerate(zip(prompts, preds, golds, correct, strict=True)):
            self.records.append({"format": arm, "example": start + i, "prompt": p, "prediction": pred,
                                 "gold": g, "correct": c})
        return correct


def _check(config: FormatSpreadConfig) -> None:
    if config.mode not in MODES:
        raise LlmgenError(f"unknown mode {config.mode!r} (known: {', '.join(MODES)})")
    if config.metric not in METRICS:
        raise LlmgenError(f"unknown metric {config.metric!r} (known: {', '.join(METRICS)})")
    if config.demos_from not in ("instances", "task"):
        raise LlmgenError(f"demos_from must be 'instances' or 'task', got {config.demos_from!r}")
    if config.num_formats < 2:
        raise LlmgenError(f"num_formats must be >= 2 (the original and at least one other), got {config.num_formats}")
    if config.shots < 0:
        raise LlmgenError(f"shots must be >= 0, got {config.shots}")
    if config.limit is not None and config.limit < 1:
        raise LlmgenError(f"limit must be >= 1, got {config.limit}")


def split_examples(task: ClassificationTask, shots: int, limit: int | None, seed: int,
                   demos_from: str = "instances") -> tuple[list[Example], list[Example]]:
    """Shuffle with the seed; the first ``shots`` are demonstrations, the next ``limit`` are evaluated."""
    examples = list(task.examples)
    random.Random(seed).shuffle(examples)
    if demos_from == "task":
        if len(task.demonstrations) < shots:
            raise LlmgenError(f"task {task.name!r} has {len(task.demonstrations)} demonstrations, {shots} shots asked")
        demos = task.demonstrations[:shots]
    else:
        if len(examples) < shots + 1:
            raise LlmgenError(f"task {task.name!r} has {len(examples)} examples: fewer than shots + 1 = {shots + 1}")
        demos, examples = examples[:shots], examples[shots:]
    return demos, examples[:limit] if limit else examples


def prepare_formats(config: FormatSpreadConfig, task: ClassificationTask) -> list[Format]:
    """The saved set when ``formats_file`` exists (reused across models), else a fresh sample."""
    if config.formats_file and Path(config.formats_file).is_file():
        formats = load_formats(config.formats_file, task.layout)[: config.num_formats]
    else:
        formats = sample_formats(task.layout, config.num_formats, seed=config.seed, original=task.original_format)
    for i, fmt in enumerate(formats):  # every format must render the task (e.g. enough option numbers)
        try:
            task.prompt(fmt, [], task.examples[0])
        except LlmgenError as e:
            raise LlmgenError(f"format {i} cannot render task {task.name!r}: {e}") from None
    return formats


def run(config: FormatSpreadConfig, backend=None) -> dict[str, Any]:
    """Run FormatSpread; ``backend`` lets callers (tests, benchmarks) pass an engine they hold."""
    _check(config)
    task = load_classification_task(config.task, config.num_generated, config.seed)
    demos, examples = split_examples(task, config.shots, config.limit, config.seed, config.demos_from)
    formats = prepare_formats(config, task)
    if len(formats) < 2:
        raise LlmgenError(f"task {task.name!r} admits only {len(formats)} distinct format(s): nothing to compare")
    if config.mode != "exhaustive":
        check_budget(config.budget, config.batch, len(examples), len(formats))

    own = backend is None
    if own:
        from llmgen.backends import get_backend

        backend = get_backend(config.backend, config.model, dtype=config.dtype)
    try:
        evaluator = FormatEvaluator(backend, task, formats, demos, examples, config.metric, config.chat,
                                    config.normalize, config.max_new_tokens)
        evaluator.prompt(0, examples[0])  # e.g. a chat template the model lacks: fail before writing
        out = Path(config.output_dir)
        atomic_write_json(out / "config.json", asdict(config))
        save_formats(out / "formats.json", formats, task.layout, config.seed)
        if config.formats_file and not Path(config.formats_file).is_file():
            save_formats(config.formats_file, formats, task.layout, config.seed)
        results = _search(config, evaluator, len(formats), len(examples))
        results.update(backend=backend.describe())
        for key in ("best", "worst"):
            arm = results[key]["index"]
            results[key].update(template=formats[arm].template(task.layout), format=formats[arm].to_dict(),
                                example_prompt=evaluator.prompt(arm, examples[0]))
    finally:
        if own:
            backend.close()

    results.update(task=task_summary(task), num_eval_examples=len(examples), shots=config.shots,
                   metric=config.metric, mode=config.mode)
    accs = [f["accuracy"] if f["evaluated"] else float("nan") for f in results["formats"]]
    pert = atomic_perturbations(formats, accs, task.layout.relevant_attributes())
    results["perturbations"], results["perturbation_pairs"] = pert["by_attribute"], pert["pairs"]
    results["perturbations_basis"] = ("full evaluations" if config.mode == "exhaustive"
                                      else "partial accuracies of the formats the bandit evaluated")
    atomic_write_jsonl(out / "samples.jsonl", evaluator.records)
    _plot(out / "accuracy_histogram.png", results, task.name)
    atomic_write_json(out / "results.json", results)
    return results


def _search(config: FormatSpreadConfig, evaluator: FormatEvaluator, n_formats: int, n_examples: int) -> dict:
    if config.mode == "exhaustive":
        outcomes = [evaluator(arm, 0, n_examples) for arm in range(n_formats)]
        ex = exhaustive_spread(outcomes)
        succ, cnt, best, worst = [sum(o) for o in outcomes], [n_examples] * n_formats, ex["best"], ex["worst"]
        spent = total = n_formats * n_examples
    else:
        res = bandit_spread(evaluator, n_formats, n_examples, config.budget, config.batch, config.seed,
                            original=0, rule=config.mode)
        succ, cnt, best, worst = res.successes, res.counts, res.best, res.worst
        spent, total = res.budget_spent, res.total_evaluations
    formats = [{"index": i, "template": evaluator.formats[i].template(evaluator.task.layout),
                "correct": succ[i], "evaluated": cnt[i], "accuracy": succ[i] / cnt[i] if cnt[i] else None}
               for i in range(n_formats)]
    return {
        "formats": formats,
        "original": {"index": 0, "accuracy": succ[0] / cnt[0]},
        "best": {"index": best, "accuracy": succ[best] / cnt[best]},
        "worst": {"index": worst, "accuracy": succ[worst] / cnt[worst]},
        "spread": succ[best] / cnt[best] - succ[worst] / cnt[worst],
        "budget_spent": spent,
        "evaluations": total,
        "exhaustive_evaluations": n_formats * n_examples,
    }


def _plot(path: Path, results: dict, task_name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    accs = [100 * f["accuracy"] for f in results["formats"] if f["accuracy"] is not None]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(accs, bins=min(30, max(5, int(math.sqrt(len(accs))) * 2)), color="#4477aa")
    ax.axvline(100 * results["original"]["accuracy"], color="#cc6677", linestyle="--", label="original format")
    ax.set_xlabel("accuracy (%)" + ("" if results["mode"] == "exhaustive" else ", partial for bandit arms"))
    ax.set_ylabel("formats")
    ax.set_title(f"{task_name}: spread {100 * results['spread']:.1f} points over {len(accs)} formats")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)

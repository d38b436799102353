"""FormatSpread (Sclar et al., ICLR 2024): how much does accuracy move with the prompt's format?

``run(config)`` samples (or reloads) a set of plausible formats for a classification task, then
either evaluates every format on every example (``mode="exhaustive"``, one backend batch) or spends
a budget of E evaluations with a Thompson-sampling (or UCB) bandit to find the best and worst
formats. Every evaluation goes through ``llmgen.prompts.format_eval`` (the same requests, scoring and
results schema as ``llmgen eval --formats``). It writes a run folder: ``config.json``,
``formats_<task>.json`` (reusable across models), ``results.json`` and ``samples.jsonl`` as ``llmgen eval``
writes them (plus ``format_spread``), ``format_samples.jsonl`` and ``accuracy_histogram.png``.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from llmgen.config import EvalSettings, check_fixed, dump_config
from llmgen.errors import LlmgenError
from llmgen.evals.format_spread import check_budget
from llmgen.io import atomic_write_json
from llmgen.prompts.format_eval import (
    FormatEvaluator,
    Request,
    Scorer,
    format_results,
    search,
    spread_entry,
    write_format_run,
)
from llmgen.prompts.formats import Format, load_formats, sample_formats, save_formats
from llmgen.prompts.render import answers_in, gold_in, prompt_in, prompt_structure
from llmgen.tasks import Task
from llmgen.tasks.classification import DEMO_POOL, demo_pool_split, load_classification_task, task_summary

MODES = ("thompson", "ucb", "exhaustive")
METRICS = ("probability_ranking", "exact_prefix_matching")
# Candidates of probability ranking: "batch", the gold labels present among the examples scored
# together (a bandit pull of B examples, a full evaluation's examples), sorted, as the reference's
# utils.py ``solve_with_rank_based_scoring`` (``output_classes = sorted(set(gold of selected ids))``);
# "all": every class of the task.
RANKING_CLASSES = ("batch", "all")


@dataclass
class FormatSpreadConfig:
    model: str = "default"
    task: str = "sentiment"  # a built-in task, an SNI task .json or a .jsonl file
    num_formats: int = 10  # formats in the set, the original included
    shots: int = 1
    num_generated: int = 210  # examples generated for a built-in task (as many as `llmgen eval --tasks <name>`)
    mode: str = "thompson"
    budget: int = 400  # E: evaluations the bandit may spend (the original's full run is not counted)
    batch: int = 20  # B: examples per arm pull
    metric: str = "probability_ranking"
    normalize: bool = False  # rank by logprob per answer character (acc_norm); the reference sums (acc)
    ranking_classes: str = "batch"  # rank among the batch's gold labels (the reference) or "all" classes
    chat: bool = False
    # eval.limit: evaluation examples per format (None: all that remain after the demos);
    # eval.max_new_tokens: the greedy answer of exact_prefix_matching
    eval: EvalSettings = field(default_factory=lambda: EvalSettings(limit=100, max_new_tokens=10))
    demos_from: str = "instances"  # "instances" (the paper) or "task" (e.g. SNI Positive Examples)
    formats_file: str | None = None  # reuse this set if it exists, else write the sampled set there
    seed: int = 0
    dtype: str = "float32"
    output_dir: str = "runs/format_spread"

    # Options are ranked by log-likelihood, or one greedy answer is matched: no sampling settings.
    FIXED_KEYS: ClassVar[tuple[str, ...]] = ("eval.num_samples", "eval.temperature", "eval.top_p",
                                             "eval.batch_size")


def _check(config: FormatSpreadConfig) -> None:
    check_fixed(config)
    config.eval.validate(task_budget=False)  # the greedy answer's budget
    if config.mode not in MODES:
        raise LlmgenError(f"unknown mode {config.mode!r} (known: {', '.join(MODES)})")
    if config.metric not in METRICS:
        raise LlmgenError(f"unknown metric {config.metric!r} (known: {', '.join(METRICS)})")
    if config.ranking_classes not in RANKING_CLASSES:
        raise LlmgenError(f"ranking_classes must be one of {', '.join(RANKING_CLASSES)}, got {config.ranking_classes!r}")
    if config.demos_from not in ("instances", "task"):
        raise LlmgenError(f"demos_from must be 'instances' or 'task', got {config.demos_from!r}")
    if config.num_formats < 2:
        raise LlmgenError(f"num_formats must be >= 2 (the original and at least one other), got {config.num_formats}")
    if not 0 <= config.shots <= DEMO_POOL:
        raise LlmgenError(f"shots must be in [0, {DEMO_POOL}], got {config.shots}")


def split_examples(task: Task, shots: int, limit: int | None, seed: int,
                   demos_from: str = "instances") -> tuple[list[dict], list[dict]]:
    """The first ``shots`` demonstrations of the pool (or of the task's own), and ``limit`` evaluated examples."""
    if demos_from == "task":
        if len(task.fewshot_docs) < shots:
            raise LlmgenError(f"task {task.name!r} has {len(task.fewshot_docs)} demonstrations, {shots} shots asked")
        examples = list(task.docs)
        random.Random(seed).shuffle(examples)
        return task.fewshot_docs[:shots], examples[:limit] if limit else examples
    if len(task.docs) < DEMO_POOL + 1:
        raise LlmgenError(f"task {task.name!r} has {len(task.docs)} examples: fewer than the demonstration "
                          f"pool + 1 = {DEMO_POOL + 1}")
    pool, examples = demo_pool_split(task.docs, seed)
    return pool[:shots], examples[:limit] if limit else examples


def prepare_formats(config: FormatSpreadConfig, task: Task) -> list[Format]:
    """The saved set when ``formats_file`` exists (reused across models), else a fresh sample."""
    if config.formats_file and Path(config.formats_file).is_file():
        formats = load_formats(config.formats_file, prompt_structure(task).layout)[: config.num_formats]
    else:
        formats = sample_formats(prompt_structure(task).layout, config.num_formats, seed=config.seed,
                                 original=prompt_structure(task).original)
    for i, fmt in enumerate(formats):  # every format must render the task (e.g. enough option numbers)
        try:
            prompt_in(task, fmt, [], task.docs[0])
            answers_in(task, fmt)
        except LlmgenError as e:
            raise LlmgenError(f"format {i} cannot render task {task.name!r}: {e}") from None
    return formats


def task_requests(task: Task, formats: list[Format], demos: list[dict], examples: list[dict], metric: str):
    """``request(arm, i)``: example i in format ``arm``, ranked over all the answers or generated."""

    def request(arm: int, i: int) -> Request:
        fmt, ex = formats[arm], examples[i]
        answers = tuple(answers_in(task, fmt)) if metric == "probability_ranking" else None
        return Request(arm, i, prompt_in(task, fmt, demos, ex), gold_in(task, fmt, ex), answers)

    return request


class BatchClassEvaluator(FormatEvaluator):
    """Ranks each pull's examples among the gold labels present in that pull, sorted (the reference's
    ``output_classes`` of the ``selected_dataset_ids`` it evaluates together); so a class absent from
    a batch of 20 is not a candidate there."""

    def __init__(self, request, scorer: Scorer, task: Task, formats: list[Format], examples: list[dict]) -> None:
        super().__init__(request, scorer)
        self.task, self.formats, self.examples = task, formats, examples

    def requests_of(self, arm: int, start: int, stop: int) -> list[Request]:
        requests = super().requests_of(arm, start, stop)
        fmt = self.formats[arm]
        present = tuple(sorted({gold_in(self.task, fmt, ex) for ex in self.examples[start:stop]}))
        return [replace(r, answers=present) if r.answers is not None else r for r in requests]


def run(config: FormatSpreadConfig, backend=None) -> dict[str, Any]:
    """Run FormatSpread; ``backend`` lets callers (tests, benchmarks) pass an engine they hold."""
    _check(config)
    task = load_classification_task(config.task, config.num_generated, config.seed)
    demos, examples = split_examples(task, config.shots, config.eval.limit, config.seed, config.demos_from)
    formats = prepare_formats(config, task)
    if len(formats) < 2:
        raise LlmgenError(f"task {task.name!r} admits only {len(formats)} distinct format(s): nothing to compare")
    if config.mode != "exhaustive":
        check_budget(config.budget, config.batch, len(examples), len(formats))

    from llmgen.backends import SamplingConfig
    from llmgen.cache import RequestCache

    t0 = time.time()
    own = backend is None
    if own:
        from llmgen.backends import get_backend

        backend = get_backend(config.eval.backend, config.model, dtype=config.dtype)
    try:
        scorer = Scorer(backend, RequestCache(None), task.name, chat=config.chat, normalize=config.normalize,
                        sampling=SamplingConfig(temperature=0.0, max_tokens=config.eval.max_new_tokens),
                        metrics=("exact_prefix_match",))  # llmgen.tasks.scoring's exact_prefix_matching
        request = task_requests(task, formats, demos, examples, config.metric)
        evaluator = (BatchClassEvaluator(request, scorer, task, formats, examples) if config.ranking_classes == "batch"
                     else FormatEvaluator(request, scorer))
        if config.chat:  # e.g. a chat template the model lacks: fail before writing
            backend.format_prompt("check", chat=True)
        out_dir = Path(config.output_dir)
        atomic_write_json(out_dir / "config.json", dump_config(config))
        if config.formats_file and not Path(config.formats_file).is_file():
            save_formats(config.formats_file, formats, prompt_structure(task).layout, config.seed)
        budget = None if config.mode == "exhaustive" else config.budget
        info = search(evaluator, len(formats), len(examples), budget, config.batch, config.seed,
                      rule="ucb" if config.mode == "ucb" else "thompson")
        entry = spread_entry(evaluator, info, formats, prompt_structure(task).layout, len(examples))
    finally:
        if own:
            backend.close()
    entry.update(task=task_summary(task), shots=config.shots, metric=config.metric)
    out, original_rows, all_rows = format_results(
        {**dump_config(config)}, config.model, backend, config.seed, {task.name: entry}, {task.name: evaluator},
        {task.name: dict(task_summary(task))}, t0)
    write_format_run(out_dir, out, original_rows, all_rows, {task.name: (formats, prompt_structure(task).layout)}, config.seed)
    _plot(out_dir / "accuracy_histogram.png", entry, task.name)
    return out


def _plot(path: Path, results: dict, task_name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    accs = [100 * f["pulls"]["correct"] / f["pulls"]["examples"] for f in results["formats"] if f["pulls"]["examples"]]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(accs, bins=min(30, max(5, int(math.sqrt(len(accs))) * 2)), color="#4477aa")
    ax.axvline(100 * results["extremes"]["original"]["accuracy"], color="#cc6677", linestyle="--", label="original format")
    ax.set_xlabel("accuracy (%)" + ("" if results["mode"] == "exhaustive" else ", partial for bandit arms"))
    ax.set_ylabel("formats")
    ax.set_title(f"{task_name}: spread {100 * results['spread']:.1f} points over {len(accs)} formats")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)

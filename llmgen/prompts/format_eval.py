"""One prompt-rendering and scoring path over prompt formats: ``llmgen eval --formats K`` and FormatSpread.

FormatSpread (Sclar et al., ICLR 2024) showed that one prompt format gives one arbitrary point in a
range that can span tens of accuracy points, so a task's score should be reported as
original / min / median / max / spread over formats. Both entry points, ``llmgen eval --formats``
(any task declared as fields) and the ``formatspread`` recipe (classification tasks, enumerations,
SNI files), describe each (format, example) as a ``Request`` and score requests through
``score_requests`` only:

- the rendered prompt (instruction, demonstrations, query) ends at the format's output field, e.g.
  ``...Sentiment: ``; the scored context is that text without its trailing whitespace and the
  continuation is the whitespace plus the answer (``("...Sentiment:", " negative")``,
  ``("...Sentiment", "\\nnegative")`` for a newline separator), so context + continuation is the
  reference's prompt + answer and the original format scores exactly what plain ``llmgen eval``
  scores. Generation starts from the same context.
- all requests of one call (every format of an exhaustive run) go to the backend in one batch, so
  vLLM schedules K formats in one pass (``--formats K`` costs less than K separate runs).
- the Thompson-sampling bandit (``--format-budget E``) pulls (format, examples) ranges through the
  same ``FormatEvaluator``.

Results have one schema (``format_results``): ``results.json`` as ``llmgen eval`` writes it (the
original format's metrics under ``results``/``uncertainty``) plus ``format_spread[task]``, and
``samples.jsonl`` (original format) / ``format_samples.jsonl`` (every format, tagged ``format_id``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from llmgen.backends import SamplingConfig, get_backend
from llmgen.display import print_table, work_progress
from llmgen.errors import LlmgenError
from llmgen.evals.format_spread import (
    atomic_perturbations,
    bandit_spread,
    check_budget,
    exhaustive_spread,
    max_evaluations,
    spread_summary,
)
from llmgen.evaluate import (
    EvalConfig,
    cached_generate,
    cached_loglikelihood,
    choice_row,
    generation_row,
    ks_for,
    open_cache,
    task_sampling,
    uncertainty,
    validate,
)
from llmgen.io import atomic_write_json, atomic_write_jsonl, safe_filename
from llmgen.prompts.formats import Format, Layout, format_stops, sample_formats, save_formats
from llmgen.prompts.render import (  # noqa: F401  (choice_pairs, generation_prompt, scored_context: re-exported)
    answers_in,
    choice_pairs,
    format_renderer,
    generation_prompt,
    gold_in,
    inputs_in,
    prompt_in,
    prompt_structure,
    scored_context,
    task_layout,
)
from llmgen.prompts.request_formats import run_request_format_eval
from llmgen.results import results_record
from llmgen.tasks import Task
from llmgen.tasks.lmeval import format_task
from llmgen.tasks.scoring import choice_scores, generation_scores

BANDIT_BATCH = 20  # B: examples per arm pull (the paper's default)
ONE_CALL = 1 << 20  # requests per backend call: all of them, so the engine schedules every format together


# --- requests ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Request:
    """Example ``doc_id`` in format ``arm``: its rendered prompt, gold answer and, for ranking, the answers."""

    arm: int
    doc_id: int
    text: str
    gold: str
    answers: tuple[str, ...] | None = None  # None: the answer is generated
    gold_index: int | None = None  # the gold answer's index (None: the first answer equal to ``gold``)
    texts: tuple[str, ...] | None = None  # multiple inputs (lm-eval's Winogrande): one prompt per answer


# --- scoring -----------------------------------------------------------------------------------------

Row = dict[str, Any]


@dataclass
class Scorer:
    """What turns requests into rows: the backend, the cache, the sampling, and the one scorer.

    ``sampling`` is one setting for every request or one per format (``arm``): a task's stop strings
    are spelled per format (``format_stops``), so each format stops where its own next example starts.

    Every score comes from the per-document scoring functions of ``llmgen.tasks.scoring`` (the
    filters, the metric registry, pass@k), the code plain ``llmgen eval`` scores with. An eval task's
    evaluator passes the runner's own row builders (``generation_row(request, prompt, completions)``,
    ``choice_row(request, context, scores)``: ``evaluate.generation_row`` / ``choice_row``), so format
    0 of ``--formats`` gives plain ``llmgen eval``'s rows. Without them a request is scored on its own
    gold and answers: generations by ``metrics`` (FormatSpread: ``exact_prefix_match``), rankings by
    ``acc`` and ``acc_norm``, the outcome (``correct``) being ``acc_norm`` when ``normalize``, else ``acc``.
    ``on_progress(examples)`` is told how many (format, example) evaluations each backend batch
    finished (fractions while a batch ends inside one example's choices): the progress bar's hook.
    """

    backend: Any
    cache: Any
    task_name: str
    sampling: Any = None
    chat: bool = False
    normalize: bool = False
    metrics: tuple[str, ...] = ("exact_prefix_match",)
    generation_row: Callable[[Request, str, list[dict]], Row] | None = None
    choice_row: Callable[[Request, str, list[dict]], Row] | None = None
    on_progress: Callable[[float], None] | None = None

    def sampling_of(self, arm: int) -> Any:
        """The generation settings of format ``arm``."""
        return self.sampling[arm] if isinstance(self.sampling, list | tuple) else self.sampling

    def score_generation(self, r: Request, prompt: str, comps: list[dict]) -> Row:
        if self.generation_row is not None:
            return self.generation_row(r, prompt, comps)
        scored = generation_scores(self.metrics, [], r.gold, [c["text"] for c in comps])
        return {"prompt": prompt, "responses": scored.responses, "correct": scored.correct, "metrics": scored.values}

    def score_choices(self, r: Request, context: str, scores: list[dict]) -> Row:
        if self.choice_row is not None:
            return self.choice_row(r, context, scores)
        answers = list(r.answers)  # type: ignore[arg-type]
        gold = r.gold_index if r.gold_index is not None else answers.index(r.gold) if r.gold in answers else -1
        scored = choice_scores(("acc", "acc_norm"), answers, [s["logprob"] for s in scores], gold,
                               outcome="acc_norm" if self.normalize else "acc")
        return {"prompt": context, "responses": scored.predictions, "choice_logprobs": scored.choice_logprobs,
                "correct": scored.correct, "metrics": scored.values}


def score_requests(requests: Sequence[Request], scorer: Scorer) -> list[dict]:
    """Rows for ``requests``, in order; ranking and generation requests each go to the backend in one call."""
    ranked = [r for r in requests if r.answers is not None]
    generated = [r for r in requests if r.answers is None]
    rows: dict[int, dict] = {}
    pairs = [[p for t, a in zip(r.texts, r.answers, strict=True) for p in choice_pairs(t, [a], scorer.backend, scorer.chat)]
             if r.texts else choice_pairs(r.text, r.answers, scorer.backend, scorer.chat) for r in ranked]  # type: ignore[arg-type]
    flat = [p for ps in pairs for p in ps]
    on_pairs = (lambda n: scorer.on_progress(n * len(ranked) / len(flat))) if scorer.on_progress and flat else None
    scores = cached_loglikelihood(scorer.backend, flat, scorer.cache, chunk=ONE_CALL, on_chunk=on_pairs) if flat else []
    at = 0
    for r, ps in zip(ranked, pairs, strict=True):
        rows[id(r)] = {**scorer.score_choices(r, ps[0][0], scores[at:at + len(ps)]), "continuations": [c for _, c in ps]}
        at += len(ps)
    if generated:
        if scorer.sampling is None:
            raise LlmgenError("generation requests need sampling settings")
        prompts = [generation_prompt(r.text, scorer.backend, scorer.chat) for r in generated]
        outs = cached_generate(scorer.backend, prompts, [scorer.sampling_of(r.arm) for r in generated], scorer.cache,
                               chunk=ONE_CALL, on_chunk=scorer.on_progress)
        for r, prompt, comps in zip(generated, prompts, outs, strict=True):
            rows[id(r)] = scorer.score_generation(r, prompt, comps)
    # the target is the request's gold in its own format (an enumerated task's answers follow the format)
    return [{"task": scorer.task_name, "doc_id": r.doc_id, **rows[id(r)], "target": r.gold, "format_id": r.arm}
            for r in requests]


class FormatEvaluator:
    """Scores (format, example range) pulls through ``score_requests`` and keeps every row.

    ``request(arm, doc_id)`` builds one request. Called as ``evaluator(arm, start, stop)`` it is the
    bandit's ``evaluate``: its 0/1 outcome is a row's ``correct[0]``, the task's first metric
    (``pass@k`` aside) on the first sample (``llmgen.tasks.scoring.outcome_metric``); ``evaluate(pulls)``
    scores many pulls in one backend batch (an exhaustive run is one call).
    """

    def __init__(self, request: Callable[[int, int], Request], scorer: Scorer) -> None:
        self.request, self.scorer = request, scorer
        self.rows: list[dict] = []

    def requests_of(self, arm: int, start: int, stop: int) -> list[Request]:
        """One pull's requests; a subclass may make them depend on the pull's examples (FormatSpread
        ranks among the gold labels of the examples scored together)."""
        return [self.request(arm, i) for i in range(start, stop)]

    def evaluate(self, pulls: Sequence[tuple[int, int, int]]) -> list[list[bool]]:
        requests = [r for arm, start, stop in pulls for r in self.requests_of(arm, start, stop)]
        rows = score_requests(requests, self.scorer)
        self.rows += rows
        out, at = [], 0
        for _, start, stop in pulls:
            out.append([bool(r["correct"][0]) for r in rows[at:at + stop - start]])
            at += stop - start
        return out

    def __call__(self, arm: int, start: int, stop: int) -> list[bool]:
        return self.evaluate([(arm, start, stop)])[0]

    def rows_of(self, arm: int) -> list[dict]:
        return sorted((r for r in self.rows if r["format_id"] == arm), key=lambda r: r["doc_id"])


def search(evaluator: FormatEvaluator, num_formats: int, num_docs: int, budget: int | None = None,
           batch: int = BANDIT_BATCH, seed: int = 0, rule: str = "thompson", show_progress: bool = True) -> dict[str, Any]:
    """Every format on every example in one batch (``budget`` None), or the budgeted bandit; a
    progress bar of (format, example) evaluations on stderr."""
    total = max_evaluations(num_formats, num_docs, budget)
    with work_progress(f"{evaluator.scorer.task_name}: formats x examples", total, show_progress) as advance:
        evaluator.scorer.on_progress = advance
        try:
            return _search(evaluator, num_formats, num_docs, budget, batch, seed, rule)
        finally:
            evaluator.scorer.on_progress = None


def _search(evaluator: FormatEvaluator, num_formats: int, num_docs: int, budget: int | None,
            batch: int, seed: int, rule: str) -> dict[str, Any]:
    if budget is None:
        outcomes = evaluator.evaluate([(arm, 0, num_docs) for arm in range(num_formats)])
        ex = exhaustive_spread(outcomes)
        return {"mode": "exhaustive", "evaluations": num_formats * num_docs, "best": ex["best"], "worst": ex["worst"],
                "pulls": {"successes": [sum(o) for o in outcomes], "counts": [num_docs] * num_formats}}
    res = bandit_spread(evaluator, num_formats, num_docs, budget, batch, seed=seed, original=0, rule=rule)
    return {"mode": "bandit" if rule == "thompson" else f"bandit-{rule}", "rule": rule, "budget": budget,
            "batch": batch, "budget_spent": res.budget_spent, "evaluations": res.total_evaluations,
            "best": res.best, "worst": res.worst, "prior": list(res.prior),
            "pulls": {"successes": res.successes, "counts": res.counts}}


# --- one result schema ---------------------------------------------------------------------------------

def _mean_metrics(rows: list[dict]) -> dict[str, float]:
    names = sorted({m for r in rows for m in r["metrics"]}, key=lambda m: (m.startswith("pass@"), len(m), m))
    return {m: sum(r["metrics"][m] for r in rows) / len(rows) for m in names}


def spread_entry(evaluator: FormatEvaluator, info: dict, formats: Sequence[Format], layout: Layout,
                 num_docs: int) -> dict[str, Any]:
    """``format_spread[task]``: per-format metrics (fully evaluated formats), pulls, summary, the search's
    ``best``/``worst`` format ids and ``extremes`` (their accuracy on the search's 0/1 outcome, template,
    example prompt), the spread between them and the atomic perturbations."""
    succ, cnt = info["pulls"]["successes"], info["pulls"]["counts"]
    aggs = [_mean_metrics(evaluator.rows_of(i)) if cnt[i] == num_docs else None for i in range(len(formats))]
    done = [i for i, a in enumerate(aggs) if a is not None]
    accuracy = [succ[i] / cnt[i] if cnt[i] else float("nan") for i in range(len(formats))]
    attrs = layout.relevant_attributes()
    pert = atomic_perturbations([f.settings(layout) for f in formats], accuracy, attrs)

    def pick(i: int) -> dict:
        rows = evaluator.rows_of(i)
        return {"format_id": i, "accuracy": accuracy[i], "format": formats[i].template(layout),
                "attributes": formats[i].to_dict(), "example_prompt": rows[0]["prompt"] if rows else None}

    return {
        **info,
        "formats": [{"format_id": i, "original": i == 0, "evaluated": aggs[i] is not None,
                     "format": formats[i].template(layout), "attributes": formats[i].to_dict(),
                     "metrics": aggs[i] or {}, "pulls": {"correct": succ[i], "examples": cnt[i]},
                     **({"stop": list(evaluator.scorer.sampling_of(i).stop)} if evaluator.scorer.sampling else {})}
                    for i in range(len(formats))],
        "summary": {m: spread_summary([aggs[i][m] for i in done], aggs[0][m]) for m in aggs[0]},  # type: ignore[index]
        "extremes": {"original": pick(0), "best": pick(info["best"]), "worst": pick(info["worst"])},
        "spread": accuracy[info["best"]] - accuracy[info["worst"]],
        "exhaustive_evaluations": len(formats) * num_docs,
        "perturbations": pert["by_attribute"], "perturbation_pairs": pert["pairs"],
        "perturbations_basis": "full evaluations" if info["mode"] == "exhaustive" else
        "partial accuracies of the formats the bandit evaluated",
        "example_prompts": [evaluator.rows_of(i)[0]["prompt"] for i in done],
    }


def format_results(config: dict, model: str, backend, seed: int, entries: dict[str, dict],
                   evaluators: dict[str, FormatEvaluator], tasks: dict[str, dict], started: float,
                   extra: dict | None = None) -> tuple[dict[str, Any], list[dict], list[dict]]:
    """The results dict (``llmgen eval``'s schema plus ``format_spread``), original rows, all rows."""
    results, unc, original_rows, all_rows = {}, {}, [], []
    for name, entry in entries.items():
        ev = evaluators[name]
        rows0 = ev.rows_of(0)
        results[name] = entry["formats"][0]["metrics"]
        unc[name] = {m: uncertainty(rows0, m, seed) for m in results[name]}
        original_rows += [{k: v for k, v in r.items() if k != "format_id"} for r in rows0]
        all_rows += sorted(ev.rows, key=lambda r: (r["format_id"], r["doc_id"]))
    out = results_record(config=config, model=model, backend=backend.describe(), seed=seed,
                         timings={"total_s": round(time.time() - started, 2)}, results=results, uncertainty=unc,
                         n_samples={n: len(ev.rows_of(0)) for n, ev in evaluators.items()}, tasks=tasks,
                         extra={**(extra or {}), "format_spread": entries})
    return out, original_rows, all_rows


def write_format_run(run: str | Path, out: dict, original_rows: list[dict], all_rows: list[dict],
                     formats: dict[str, tuple[list[Format], Layout]], seed: int, log_samples: bool = True) -> None:
    """``config.json``, ``formats_<task>.json``, ``samples.jsonl``, ``format_samples.jsonl``, ``results.json``."""
    run = Path(run)
    atomic_write_json(run / "config.json", out["config"])
    for name, (fmts, layout) in formats.items():
        save_formats(run / safe_filename(f"formats_{name}.json"), fmts, layout, seed)
    if log_samples:
        atomic_write_jsonl(run / "samples.jsonl", original_rows)
        atomic_write_jsonl(run / "format_samples.jsonl", all_rows)
    atomic_write_json(run / "results.json", out)


# --- llmgen eval --formats ---------------------------------------------------------------------------

def task_evaluator(backend, task: Task, config: EvalConfig, cache, formats: Sequence[Format]) -> FormatEvaluator:
    """A ``FormatEvaluator`` over an eval ``Task``: its demonstrations and choices, scored by the
    runner's own row builders (the task's one scorer), so format 0 gives plain ``llmgen eval``'s rows.

    A task with its own prompt structure (enumerations, fixed text) is spelled by the prompt layer
    (``prompt_in``, ``answers_in``, ...); a fields task is rendered by its own ``build_prompt`` with
    a renderer per format (built only for such a task)."""
    ranked = task.output_type == "multiple_choice"
    renderers = [format_renderer(f, task) for f in formats] if task.prompt is None else []

    def request(arm: int, i: int) -> Request:
        doc = task.docs[i]
        if task.prompt is not None:
            fmt = formats[arm]
            demos = task.demonstrations(doc, task._num_fewshot(config.num_fewshot), i)
            text = prompt_in(task, fmt, demos, doc)
            if not ranked:
                return Request(arm, i, text, gold_in(task, fmt, doc))
            return Request(arm, i, text, gold_in(task, fmt, doc), tuple(answers_in(task, fmt, doc)),
                           task.gold_index(doc), inputs_in(task, fmt, demos, doc))
        text = task.build_prompt(doc, renderers[arm], config.num_fewshot, i)  # i: the seeded sampler's doc_id, as run_eval
        if not ranked:
            return Request(arm, i, text, task.target_of(doc))
        return Request(arm, i, text, task.target_of(doc), tuple(task.choices_of(doc)), task.gold_index(doc))

    ks = ks_for(config) if "pass@k" in task.metrics else []
    scorer = Scorer(backend, cache, task.name, sampling=None if ranked else format_samplings(backend, task, config, formats),
                    chat=config.apply_chat_template,
                    generation_row=lambda r, prompt, comps: generation_row(task, r.doc_id, prompt, comps, ks),
                    choice_row=lambda r, context, scores: choice_row(task, r.doc_id, context, scores))
    return FormatEvaluator(request, scorer)


def format_samplings(backend, task: Task, config: EvalConfig, formats: Sequence[Format]) -> list[SamplingConfig]:
    """A generation task's sampling in each format: its own (``task_sampling``) with its stop strings
    spelled in that format (``format_stops``: the original's kept, the format's spelling of a
    descriptor added), so format 0 stops exactly as plain ``llmgen eval`` and lm-eval do."""
    base = task_sampling(backend, task, config)
    st = prompt_structure(task)
    return [replace(base, stop=format_stops(base.stop, st.layout, st.original, f)) for f in formats]


def run_format_eval(config: EvalConfig, num_formats: int, budget: int | None = None, backend=None,
                    show_progress: bool = True, tasks: Sequence[Task] | None = None) -> dict[str, Any]:
    """Evaluate every task of ``config`` in ``num_formats`` formats; write and print the run.

    Format 0 is the grammar's original format, which renders exactly as plain ``llmgen eval``, so
    ``llmgen compare`` works against plain runs. See the module docstring for the run folder.
    ``tasks``: the ones ``validate(config)`` returned, when the caller validated first.
    """
    if num_formats < 1:
        raise LlmgenError(f"--formats must be >= 1, got {num_formats}")
    if budget is not None and budget < 1:
        raise LlmgenError(f"--format-budget must be >= 1, got {budget}")
    tasks = validate(config) if tasks is None else list(tasks)
    if any(t.output_type == "requests" for t in tasks):  # TOFU: its fields are varied, it builds its requests
        out = run_request_format_eval(config, tasks, num_formats, budget, backend, show_progress)
        if show_progress:
            print_format_results(out)
        return out
    originals: dict[str, Format] = {}  # an lm-eval task's own spelling of its fields is its format 0
    if any(t.output_type == "lmeval" for t in tasks):
        converted = {t.name: format_task(t, config) for t in tasks if t.output_type == "lmeval"}
        originals = {name: fmt for name, (_, fmt) in converted.items()}
        tasks = [converted[t.name][0] if t.name in converted else t for t in tasks]
    layouts = {t.name: task_layout(t) for t in tasks}
    sets = {t.name: sample_formats(layouts[t.name], num_formats, seed=config.seed,
                                   original=originals.get(t.name) or prompt_structure(t).original) for t in tasks}
    if budget is not None:
        for t in tasks:
            check_budget(budget, min(BANDIT_BATCH, len(t.docs)), len(t.docs), len(sets[t.name]))

    t0 = time.time()
    own = backend is None
    if own:
        backend = get_backend(config.backend, config.model, **config.model_args)
    cache = open_cache(config)
    entries, evaluators = {}, {}
    try:
        for task in tasks:
            ev = task_evaluator(backend, task, config, cache, sets[task.name])
            n = len(task.docs)
            info = search(ev, len(sets[task.name]), n, budget, min(BANDIT_BATCH, n), config.seed,
                          show_progress=show_progress)
            entries[task.name] = spread_entry(ev, info, sets[task.name], layouts[task.name], n)
            evaluators[task.name] = ev
    finally:
        cache.close()
        if own:
            backend.close()
    out, original_rows, all_rows = format_results(
        {**asdict(config), "formats": num_formats, "format_budget": budget}, config.model, backend, config.seed,
        entries, evaluators, {t.name: t.describe() for t in tasks}, t0,
        {"format_eval": {"num_formats": num_formats, "budget": budget}})
    if config.output_dir:
        write_format_run(config.output_dir, out, original_rows, all_rows,
                         {t.name: (sets[t.name], layouts[t.name]) for t in tasks}, config.seed, config.log_samples)
    if show_progress:
        print_format_results(out)
    out["samples"] = original_rows
    return out


def print_format_results(out: dict[str, Any]) -> None:
    """One row per task and metric: original [95% CI], min, median, max and spread (in points for rates)."""
    from rich.table import Table

    modes = sorted({e["mode"] for e in out["format_spread"].values()})
    table = Table(title=f"{out['model']}: scores over prompt formats ({', '.join(modes)})")
    for col in ("task", "metric", "original", "95% CI", "min", "median", "max", "spread", "formats"):
        table.add_column(col, justify="left" if col in ("task", "metric") else "right")
    for task, entry in out["format_spread"].items():
        for m, s in entry["summary"].items():
            u = out["uncertainty"][task][m]
            table.add_row(task, m, f"{s['original']:.3f}", f"[{u['ci_low']:.3f}, {u['ci_high']:.3f}]", f"{s['min']:.3f}",
                          f"{s['median']:.3f}", f"{s['max']:.3f}", f"{s['spread']:.3f}", str(s["formats"]))
    print_table(table)

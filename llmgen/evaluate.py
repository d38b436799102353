"""``llmgen eval``: run tasks against a backend, write a run folder, resume from the request cache.

Everything that can be wrong with the request (unknown task, missing file, k > n, greedy with
n > 1, ...) is checked before the model is loaded, so a bad command fails in a second, not after
a minute of engine start-up, and leaves no run folder behind.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from llmgen import sharding
from llmgen.backends import SECRET_ARGS, Backend, SamplingConfig, backend_class, get_backend
from llmgen.backends.base import encode_pair
from llmgen.backends.cached import CachedBackend
from llmgen.cache import RequestCache, check_cache
from llmgen.display import RunProgress
from llmgen.errors import LlmgenError
from llmgen.eval_config import (  # noqa: F401  (re-exported: the runner's public names)
    NO_FLAG,
    RENAMED_FLAGS,
    EvalConfig,
    flag_of,
    ks_for,
    request_chunk,
    sampling_for,
)
from llmgen.evals.stats import summarize
from llmgen.io import atomic_write_json, atomic_write_jsonl, check_finite, check_output_dir, mark_run
from llmgen.models import cache_dir, check_seed
from llmgen.prompts.chat import render_prompt
from llmgen.results import results_record, versions  # noqa: F401  (versions: re-exported)
from llmgen.tasks import Renderer, Request, Scored, Task, get_task
from llmgen.tasks.lmeval import check_fewshot, evaluate_lmeval_task
from llmgen.tasks.scoring import pass_at_k_metrics


def resolve_tasks(config: EvalConfig) -> list[Task]:
    """The tasks to run, each cut to ``--limit``; a task named twice is an error (it would be run
    and counted twice, and its rows would mix in the run folder)."""
    if not config.tasks:
        raise LlmgenError("no tasks given (--tasks)")
    seen: set[str] = set()
    for name in config.tasks:
        if name in seen:
            raise LlmgenError(f"--tasks names {name!r} twice")
        seen.add(name)
    tasks = [get_task(name) for name in config.tasks]
    names = [t.name for t in tasks]
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice is not None:
        raise LlmgenError(f"--tasks gives two tasks named {twice!r}; rename one (the `name:` of a task file)")
    if config.limit is not None:
        for t in tasks:
            t.docs = t.limit_docs(config.limit)
    return tasks


def validate(config: EvalConfig) -> list[Task]:
    """Every check of an evaluation that needs no model, so a bad command fails in one error line
    before the engine starts: the seed, finite numbers, the settings, the backend's name, arguments
    and model (dtype, adapter folder, custom code: ``Backend.check_model``), that the run folder can
    be written, the tasks (loaded here, once: the caller passes them on), their sampling and k values,
    ``--num-fewshot`` against lm-eval tasks' demonstrations, and the request cache (a damaged one is
    moved aside now, an unwritable one refused now). ``llmgen eval`` and ``run_eval`` both call this."""
    check_seed(config.seed)
    check_finite(config.temperature, "--temperature")
    check_finite(config.top_p, "--top-p")
    check_finite(config.model_args, "--model-args")
    backend_class(config.backend).check_model(config.model, config.model_args)
    config.validate()
    if config.output_dir:
        check_output_dir(config.output_dir, overwrite=True)
    check_backend_args(config.backend, config.model_args)
    tasks = resolve_tasks(config)
    check_backend_tasks(config.backend, tasks)
    for t in tasks:
        sampling_for(t, config)
    ks_for(config)
    if config.num_fewshot:
        check_fewshot(tasks, config.num_fewshot)
    if config.cache == "auto":
        check_cache(cache_dir() / "requests.sqlite")
    return tasks


def backend_arg_names(backend: str) -> set[str] | None:
    """Keyword arguments the backend accepts (``--model-args``); None when it takes any. The
    backend registry answers (``Backend.accepted_args``), so a plugin's backend is checked too."""
    return backend_class(backend).accepted_args()


def check_backend_args(backend: str, model_args: dict[str, Any]) -> None:
    """An unknown ``--model-args`` key, or a secret, is one error line naming it, before any model loads.

    An API key is refused, not redacted: ``model_args`` is written to config.json (and from there
    to results.json and the report) so that a run can be rerun from its folder; a key left out of
    it would make that folder lie, so the key never enters the config and comes from the environment."""
    secret = sorted(SECRET_ARGS & set(model_args))
    if secret:
        raise LlmgenError(f"--model-args {secret[0]}=... would be written to config.json: put the key in "
                          f"$OPENAI_API_KEY, or in a variable named by --api-key-env NAME")
    cls = backend_class(backend)
    if not model_args:
        return
    known = cls.accepted_args()
    unknown = sorted(set(model_args) - known) if known is not None else []
    if "base_url" in unknown:
        raise LlmgenError(f"--base-url needs a server backend (openai, openai-chat, openai-completions), "
                          f"not {backend}")
    if unknown:
        public = sorted(n for n in known if not n.endswith("_obj"))
        hint = f" (known: {', '.join(public)})" if len(public) <= 12 else ""
        raise LlmgenError(f"--model-args: the {backend} backend has no argument {unknown[0]!r}{hint}")


def check_backend_tasks(backend: str, tasks: Sequence[Task]) -> None:
    """A task the backend cannot run (a loglikelihood task on a text-only API) is one error line
    naming it, before any request."""
    cls = backend_class(backend)
    for t in tasks:
        cls.check_task(t.name, t.output_type)


def open_cache(config: EvalConfig) -> RequestCache:
    if config.cache is None:
        return RequestCache(None)
    return RequestCache(cache_dir() / "requests.sqlite" if config.cache == "auto" else config.cache)


def cached_generate(backend: Backend, prompts: Sequence[str], sampling: SamplingConfig | Sequence[SamplingConfig],
                    cache: RequestCache, chunk: int | None = None,
                    on_chunk: Callable[[int], None] | None = None) -> list[list[dict]]:
    """Generate through the cache (``CachedBackend``); per prompt, its completions as dicts
    (``sampling``: one setting, or one per prompt).

    ``chunk`` caps the requests per backend call; the backend's batch size caps it too, so the
    cache commits (and ``on_chunk`` moves) at least once per batch.
    """
    size = min(chunk, backend.batch_size) if chunk else None
    outs = CachedBackend(backend, cache, batch_size=size).generate(prompts, sampling, on_batch=on_chunk)
    return [[{"text": c.text, "finish_reason": c.finish_reason, "num_tokens": len(c.token_ids),
              "logprob": float(sum(c.logprobs)), "truncated": c.truncated} for c in comps] for comps in outs]


def cached_loglikelihood(backend: Backend, pairs: Sequence[tuple[str, str]], cache: RequestCache,
                         chunk: int | None = None, on_chunk: Callable[[int], None] | None = None) -> list[dict]:
    """Score (context, continuation) pairs through the cache (``CachedBackend``)."""
    size = min(chunk, backend.batch_size) if chunk else None
    res = CachedBackend(backend, cache, batch_size=size).loglikelihood(pairs, on_batch=on_chunk)
    return [{"logprob": r.logprob, "num_tokens": r.num_tokens, "is_greedy": r.is_greedy, "truncated": r.truncated}
            for r in res]


def task_prompt(backend: Backend, task: Task, doc: dict, doc_id: int, config: EvalConfig,
                renderer: Renderer | None = None) -> str:
    """The text sent to the model for one document: plain, or chat messages through the chat template
    (always for a chat backend such as openai-chat, whose server applies it)."""
    if not (config.apply_chat_template or backend.CHAT) or task.output_type == "loglikelihood_rolling":
        return task.build_prompt(doc, renderer, config.num_fewshot, doc_id)
    return backend.format_prompt(task.build_messages(doc, renderer, config.num_fewshot, doc_id), chat=True)


def task_sampling(backend: Backend, task: Task, config: EvalConfig) -> SamplingConfig:
    """A generation task's sampling: its own settings (an lm-eval task's ``generation_kwargs``), else the runner's."""
    return task.generation_sampling(backend) or sampling_for(task, config)


def generation_row(task: Task, doc_id: int, prompt: str, comps: list[dict], ks: Sequence[int]) -> dict[str, Any]:
    """One generation document's row: its responses scored by the task's one scorer
    (``Task.score_responses``: filters, the metric registry) plus ``pass@k`` from the per-sample outcomes.
    Plain ``llmgen eval`` and ``--formats`` both build their rows here."""
    doc = task.docs[doc_id]
    responses = [c["text"] for c in comps]
    correct, metrics = task.score_responses(responses, doc_id)
    return {"task": task.name, "doc_id": doc_id, "prompt": prompt, "target": task.target_of(doc),
            "gold": task.gold_answer(doc), "responses": responses, "filtered": task.filtered(responses),
            "correct": list(correct), "response_logprobs": [c["logprob"] for c in comps],
            "response_tokens": [c["num_tokens"] for c in comps],
            "metrics": {**metrics, **pass_at_k_metrics(correct, ks)}, "truncated": any(c["truncated"] for c in comps)}


def choice_row(task: Task, doc_id: int, prompt: str, scores: list[dict]) -> dict[str, Any]:
    """One multiple-choice document's row: the choices' loglikelihoods scored by the task's metrics
    (``Task.score_choices``); shared by plain ``llmgen eval`` and ``--formats``."""
    doc = task.docs[doc_id]
    lps = [s["logprob"] for s in scores]
    scored = task.score_choices(doc, lps, doc_id)
    return {"task": task.name, "doc_id": doc_id, "prompt": prompt, "target": scored.choices[scored.gold_index],
            "responses": scored.predictions, "choice_logprobs": lps, "correct": scored.correct,
            "truncated": any(s["truncated"] for s in scores), "metrics": scored.values}


# A runner scores one task of its output type: (backend, task, config, cache, renderer, progress) ->
# (aggregate metrics, per-example rows). ``RUNNERS`` maps each of ``llmgen.tasks.OUTPUT_TYPES`` to its
# runner; a ``requests`` task's behaviour comes from its subclass hooks (``doc_requests``, ``score_outputs``).
Runner = Callable[..., tuple[dict[str, float], list[dict]]]


def evaluate_task(backend: Backend, task: Task, config: EvalConfig, cache: RequestCache,
                  renderer: Renderer | None = None, progress=None) -> tuple[dict[str, float], list[dict]]:
    """Score one task with its output type's runner (``RUNNERS``); returns (aggregate metrics, per-example rows).

    Requests go through the request cache; per-document values come from the task's scorer
    (``generation_row`` / ``choice_row``) and the corpus values from ``task.aggregate`` (means, or
    perplexity ratios for rolling tasks).
    """
    return RUNNERS[task.output_type](backend, task, config, cache, renderer, progress)


def _bar(task: Task, progress) -> Callable[[int], None]:
    """``advance(n)``: moves the task's progress bar (a no-op without one)."""
    if progress is None:
        return lambda n: None
    bar = progress.add_task(task.name, total=len(task.docs))
    return lambda n: progress.advance(bar, n) if n else None


def _aggregate(task: Task, rows: list[dict], values: dict[str, list] | None = None) -> dict[str, float]:
    """``task.aggregate`` of every per-document metric of the rows (plus ``values`` given directly)."""
    values = dict(values or {})
    for r in rows:
        for m, v in r["metrics"].items():
            values.setdefault(m, []).append(v)
    names = sorted(values, key=lambda m: (m.startswith("pass@"), len(m), m))
    return task.aggregate({m: values[m] for m in names})


def run_generate(backend: Backend, task: Task, config: EvalConfig, cache: RequestCache,
                 renderer: Renderer | None = None, progress=None) -> tuple[dict[str, float], list[dict]]:
    """A ``generate`` task: completions of each prompt, scored by ``generation_row``."""
    prompts = [task_prompt(backend, task, d, i, config, renderer) for i, d in enumerate(task.docs)]
    sampling = task_sampling(backend, task, config)
    outs = cached_generate(backend, prompts, sampling, cache, chunk=request_chunk(config), on_chunk=_bar(task, progress))
    ks = ks_for(config) if "pass@k" in task.metrics else []
    rows = [generation_row(task, i, prompt, comps, ks) for i, (prompt, comps) in enumerate(zip(prompts, outs, strict=True))]
    return _aggregate(task, rows), rows


def run_multiple_choice(backend: Backend, task: Task, config: EvalConfig, cache: RequestCache,
                        renderer: Renderer | None = None, progress=None) -> tuple[dict[str, float], list[dict]]:
    """A ``multiple_choice`` task: each choice's loglikelihood after the prompt, scored by ``choice_row``."""
    prompts = [task_prompt(backend, task, d, i, config, renderer) for i, d in enumerate(task.docs)]
    advance = _bar(task, progress)
    pairs, spans = [], []
    for doc, prompt in zip(task.docs, prompts, strict=True):
        choices = task.choices_of(doc)
        spans.append((len(pairs), len(choices)))
        pairs += [(prompt, task.choice_prefix + c) for c in choices]
    scores = cached_loglikelihood(backend, pairs, cache, on_chunk=None)
    rows = []
    for i, (prompt, (s, n)) in enumerate(zip(prompts, spans, strict=True)):
        rows.append(choice_row(task, i, prompt, scores[s:s + n]))
        advance(1)
    return _aggregate(task, rows), rows


def run_rolling(backend: Backend, task: Task, config: EvalConfig, cache: RequestCache,
                renderer: Renderer | None = None, progress=None) -> tuple[dict[str, float], list[dict]]:
    """A ``loglikelihood_rolling`` task: each text's loglikelihood, scored as perplexities by ``task.score``."""
    texts = [task_prompt(backend, task, d, i, config, renderer) for i, d in enumerate(task.docs)]
    values: dict[str, list] = {}
    rows = []
    for i, (text, r) in enumerate(zip(texts, CachedBackend(backend, cache).loglikelihood_rolling(
            texts, on_batch=_bar(task, progress)), strict=True)):
        for m, v in task.score(task.docs[i], Scored(loglikelihood=r.logprob, num_words=r.num_words, num_bytes=r.num_bytes)).items():
            values.setdefault(m, []).append(v)
        rows.append({"task": task.name, "doc_id": i, "prompt": text, "target": "", "responses": [],
                     "loglikelihood": r.logprob,
                     "tokens": r.num_tokens, "words": r.num_words, "bytes": r.num_bytes, "metrics": {}})
    return _aggregate(task, rows, values), rows


def run_lmeval_task(backend: Backend, task: Task, config: EvalConfig, cache: RequestCache,
               renderer: Renderer | None = None, progress=None) -> tuple[dict[str, float], list[dict]]:
    """An ``lmeval:NAME`` task: lm-eval's own evaluator over the backend (``llmgen.tasks.lmeval``)."""
    return evaluate_lmeval_task(backend, task, config, cache)


def run_requests(backend: Backend, requests: Sequence[Request], cache: RequestCache,
                 max_tokens: int | None = None, on_batch: Callable[[int], None] | None = None) -> list:
    """Outputs of mixed requests, in order: a ``LoglikelihoodResult`` per loglikelihood request,
    the completions per generate request. Each kind goes to the backend in one cached call;
    ``max_tokens`` (``--max-tokens``) replaces the generation budget of every generate request."""
    cached = CachedBackend(backend, cache)
    tok = backend.tokenizer
    outputs: list = [None] * len(requests)
    scored = [i for i, r in enumerate(requests) if r.kind == "loglikelihood"]
    if any(requests[i].eos for i in scored) and tok.eos_token_id is None:
        raise LlmgenError("this task scores answers with their EOS token; this tokenizer has none")
    pairs = []
    for i in scored:
        r = requests[i]
        ctx, cont = encode_pair(tok, render_prompt(tok, r.prompt), r.continuation)
        pairs.append((ctx, [*cont, tok.eos_token_id] if r.eos else cont))
    for i, res in zip(scored, cached.loglikelihood_tokens(pairs, on_batch=on_batch), strict=True):
        outputs[i] = res
    generated = [i for i, r in enumerate(requests) if r.kind == "generate"]
    settings = [requests[i].sampling if max_tokens is None else dataclasses.replace(requests[i].sampling, max_tokens=max_tokens)
                for i in generated]
    if generated:
        comps = cached.generate([requests[i].prompt for i in generated], settings, on_batch=on_batch)
        for i, c in zip(generated, comps, strict=True):
            outputs[i] = c
    return outputs


def evaluate_request_task(backend: Backend, task: Task, config: EvalConfig, cache: RequestCache,
                          renderer: Renderer | None = None, progress=None) -> tuple[dict[str, float], list[dict]]:
    """Score a task that builds its own requests (``output_type: requests``, e.g. TOFU): every
    document's requests in one pass through the cache, ``task.score_outputs`` per document,
    ``task.aggregate_rows`` over the rows."""
    per_doc = [task.doc_requests(d) for d in task.docs]
    flat = [r for rs in per_doc for r in rs]
    bar = progress.add_task(task.name, total=len(flat)) if progress is not None else None
    outs = run_requests(backend, flat, cache, config.max_new_tokens,
                        on_batch=(lambda n: progress.advance(bar, n)) if progress is not None else None)
    rows, at = [], 0
    for doc, doc_id, reqs in zip(task.docs, task.doc_ids(), per_doc, strict=True):
        got = outs[at:at + len(reqs)]
        at += len(reqs)
        comps = [c for r, o in zip(reqs, got, strict=True) if r.kind == "generate" for c in o]
        row = {"task": task.name, "doc_id": doc_id, "prompt": render_prompt(backend.tokenizer, reqs[0].prompt),
               "target": task.target_of(doc), "responses": [c.text for c in comps],
               "metrics": task.score_outputs(doc, got), "truncated": any(c.truncated for c in comps)}
        if task.group_key is not None:
            row[task.group_key] = doc[task.group_key]
        rows.append(row)
    return task.aggregate_rows(rows), rows


RUNNERS: dict[str, Runner] = {"generate": run_generate, "multiple_choice": run_multiple_choice,
                               "loglikelihood_rolling": run_rolling, "lmeval": run_lmeval_task,
                               "requests": evaluate_request_task}


def uncertainty(rows: list[dict], metric: str, seed: int) -> dict[str, float]:
    """Standard error and bootstrap interval of a metric from its per-example values."""
    return summarize([r["metrics"][metric] for r in rows], seed=seed)


def evaluate_tasks(backend: Backend, tasks: Sequence[Task], config: EvalConfig, cache: RequestCache,
                   progress=None) -> tuple[dict[str, dict], dict[str, dict], list[dict], dict[str, float]]:
    """The runner's loop over tasks: ``(results, uncertainty, rows, timings)`` in the one schema.

    ``llmgen eval`` and the recipes' evaluations (a checkpoint's pass@k, a sweep cell's accuracy,
    hyperfitting's generations) all call this, so every evaluation gets the request cache, resume
    and the same per-example rows."""
    results: dict[str, dict] = {}
    unc: dict[str, dict] = {}
    rows: list[dict] = []
    timings: dict[str, float] = {}
    for task in tasks:
        t1 = time.time()
        agg, task_rows = evaluate_task(backend, task, config, cache, progress=progress)
        results[task.name] = agg
        unc[task.name] = {m: uncertainty(task_rows, m, config.seed) for m in agg
                          if task_rows and all(isinstance(r["metrics"].get(m), int | float) for r in task_rows)}
        timings[f"{task.name}_s"] = round(time.time() - t1, 2)
        rows += task_rows
    return results, unc, rows, timings


def run_eval(config: EvalConfig, backend: Backend | None = None, show_progress: bool = True,
             tasks: Sequence[Task] | None = None, started: float | None = None) -> dict[str, Any]:
    """Evaluate every task; write ``config.json``, ``results.json``, ``samples.jsonl`` to the run folder.

    ``tasks``: the ones ``validate(config)`` returned, when the caller validated first (``llmgen eval``
    does, to fail before the run folder is taken); else they are validated here. ``started``: when
    the caller began validating, so ``timings.tasks_data_s`` counts that time too."""
    t_start = time.time() if started is None else started
    tasks = validate(config) if tasks is None else list(tasks)
    t0 = time.time()
    own_backend = backend is None
    sharding.start(config.backend)  # under torchrun/accelerate: join the ranks before the model loads
    if backend is None:
        # --batch-size sets HF's forward batch (None: HFBackend's default); vLLM schedules on its own
        extra = {"batch_size": config.batch_size} if config.backend == "hf" and config.batch_size else {}
        backend = get_backend(config.backend, config.model, **{**extra, **config.model_args})
    t_load = time.time() - t0
    cache = open_cache(config)
    backend, cache = sharding.shard(backend, cache)  # each rank scores a slice; every rank gets all results
    # stages (docs/benchmarks.md, bench/overhead.py): tasks and data, model load, per task, and within
    # the tasks the cache (keys, fingerprint, lookups) and the backend's seconds per request kind
    timings = {"tasks_data_s": round(t0 - t_start, 2), "load_s": round(t_load, 2)}
    try:
        with RunProgress(enabled=show_progress) as progress:  # stderr: stdout holds only the results
            results, unc, all_rows, task_times = evaluate_tasks(backend, tasks, config, cache, progress)
        timings.update(task_times)
        described = backend.describe()  # before close(): describe() reads the loaded model
    finally:
        cache_stats = {"hits": cache.hits, "misses": cache.misses, "path": str(cache.path) if cache.path else None}
        cache.close()
        if own_backend and backend is not None:
            backend.close()
    timings.update({f"{stage}_requests_s" if stage != "cache" else "cache_s": round(v, 2)
                    for stage, v in sorted(cache.seconds.items())})
    timings["total_s"] = round(time.time() - t0, 2)
    out = results_record(config=asdict(config), model=config.model, backend=described, seed=config.seed,
                         timings=timings, cache=cache_stats, results=results, uncertainty=unc,
                         n_samples={t.name: len(t.docs) for t in tasks}, tasks={t.name: t.describe() for t in tasks})
    if config.output_dir and sharding.rank() == 0:  # rank 0 alone writes
        t_write = time.time()
        run = Path(config.output_dir)
        mark_run(run)  # a library run is an llmgen run folder too: a later command may resume or replace it
        atomic_write_json(run / "config.json", asdict(config))
        if config.log_samples:
            atomic_write_jsonl(run / "samples.jsonl", all_rows)
        timings["write_s"] = round(time.time() - t_write, 2)  # results.json itself: the only write after
        atomic_write_json(run / "results.json", out)
    out["samples"] = all_rows
    return out

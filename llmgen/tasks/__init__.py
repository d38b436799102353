"""Evaluation tasks: a ``Task`` is documents + a prompt + a scorer.

Layers (each module imports only those above it in this list, never the package itself):

- ``llmgen.tasks.scoring``: answer filters (``FILTERS``), metrics (``METRICS``) and the per-document
  scorer every evaluation path calls (``generation_scores``, ``choice_scores``, ``pass_at_k_metrics``);
- ``llmgen.tasks.base``: ``Task``, ``Request``, the ``TASKS`` registry;
- the families, one module each: ``math`` (arithmetic, generated math, MATH/GSM8K loaders), ``tofu``,
  ``classification`` (FormatSpread's tasks), ``hub`` (datasets), ``files`` (YAML/JSONL tasks, the
  catalogue), ``lmeval`` (lm-eval tasks);
- this package: ``get_task``/``list_tasks``, which find the families by walking the package
  (``_load_plugin_tasks``: every module defining ``register_tasks(registry)``), and re-exports of the
  names above so ``from llmgen.tasks import Task, METRICS, get_task`` keeps working.

A task declares its prompt as *fields with descriptors* (``Question: ...``) and an output
descriptor (``Answer:``) rather than as one opaque template, so that the prompt layer
(``llmgen.prompts.render``, below the tasks) can render the same task in any plausible format of the
FormatSpread grammar (``llmgen eval --formats K``). A YAML task may instead give a plain ``template``.

Three output types, as in lm-eval: ``generate`` (responses → answer filters → metrics),
``multiple_choice`` (loglikelihood of each choice; gold as an index or as the choice text) and
``loglikelihood_rolling`` (the whole text's loglikelihood → word/byte perplexity, bits per byte).
A fourth, ``requests``, is for a task that asks several kinds of request per document (TOFU): a
subclass gives ``doc_requests(doc)``, ``score_outputs(doc, outputs)`` and ``aggregate_rows(rows)``.
"""

from __future__ import annotations

import importlib
import pkgutil

from llmgen.errors import LlmgenError
from llmgen.tasks.base import (
    OUTPUT_TYPES,
    REQUEST_KINDS,
    TASKS,
    Renderer,
    Request,
    Task,
    default_renderer,
)
from llmgen.tasks.classification import classification_eval_task
from llmgen.tasks.files import (
    CATALOGUE_DIR,
    FEWSHOT_KEYS,
    YAML_KEYS,
    catalogue,
    read_yaml,
    task_from_jsonl,
    task_from_spec,
    task_from_yaml,
)
from llmgen.tasks.lmeval import PREFIX, load_lmeval_task
from llmgen.tasks.math import make_arithmetic, math_eval_task, math_task
from llmgen.tasks.scoring import (
    DEFAULT_METRICS,
    FILTERS,
    METRICS,
    FilterStep,
    Metric,
    Scored,
    apply_filters,
    bits_per_byte,
    build_filters,
    choice_prediction,
    choice_scores,
    first_number,
    generation_scores,
    last_number,
    math_answer,
    math_normalize,
    outcome_metric,
    pass_at_k_metrics,
    regex_extract,
    strip_answer,
    weighted_perplexity,
)
from llmgen.tasks.tofu import tofu_data_source, tofu_eval_task

__all__ = [
    "CATALOGUE_DIR", "DEFAULT_METRICS", "FEWSHOT_KEYS", "FILTERS", "METRICS", "OUTPUT_TYPES", "REQUEST_KINDS",
    "TASKS", "YAML_KEYS", "FilterStep", "Metric", "Renderer", "Request", "Scored", "Task", "apply_filters",
    "bits_per_byte", "build_filters", "catalogue", "choice_prediction", "choice_scores", "classification_eval_task",
    "default_renderer", "first_number", "generation_scores", "get_task", "last_number", "list_tasks",
    "make_arithmetic", "math_answer", "math_eval_task", "math_normalize", "math_task", "outcome_metric",
    "pass_at_k_metrics", "read_yaml", "regex_extract", "strip_answer", "task_from_jsonl", "task_from_spec",
    "task_from_yaml", "tofu_data_source", "tofu_eval_task", "weighted_perplexity",
]

TASKS.register("arithmetic", lambda: make_arithmetic(steps=1))
TASKS.register("arithmetic_2step", lambda: make_arithmetic(steps=2))


def get_task(name: str) -> Task:
    """A registered task name, a catalogue task, a ``.yaml``/``.yml`` task file, a ``.jsonl`` prompt file or an SNI ``.json`` task file."""
    if name.endswith((".yaml", ".yml")):
        return task_from_yaml(name)
    if name.endswith(".jsonl"):
        return task_from_jsonl(name)
    if name.endswith(".json"):  # a Super-NaturalInstructions task file, read in its own structure
        return classification_eval_task(name)
    if name.startswith(PREFIX):
        return load_lmeval_task(name)
    _load_plugin_tasks()
    if name not in TASKS:
        entries = catalogue()
        if name in entries:
            path, spec = entries[name]
            return task_from_spec(spec, path)
        known = ", ".join(sorted(set(TASKS) | set(entries)))
        raise LlmgenError(f"unknown task {name!r} (known: {known})")
    return TASKS.get(name)()


_PLUGINS_LOADED = False


def _load_plugin_tasks() -> None:
    """Register the task families' tasks: every module of this package that defines
    ``register_tasks(registry)`` is imported and called (imports are cheap: no torch at module
    level), so a new family module needs no list here."""
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True
    for info in pkgutil.iter_modules(__path__):
        register = getattr(importlib.import_module(f"{__name__}.{info.name}"), "register_tasks", None)
        if register is not None:
            register(TASKS)


def list_tasks() -> list[str]:
    _load_plugin_tasks()
    return list(TASKS)

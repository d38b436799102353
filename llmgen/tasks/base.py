"""The one ``Task`` type (documents + a prompt + a scorer), ``Request`` and the ``TASKS`` registry.

A task declares its prompt as *fields with descriptors* (``Question: ...``) and an output
descriptor (``Answer:``) rather than as one opaque template, so that the prompt layer
(``llmgen.prompts.render``) can render the same task in any plausible format of the FormatSpread
grammar (``llmgen eval --formats K``); a task with its own layout (enumerations, fixed text) holds it
in ``Task.prompt`` (a ``PromptStructure``). A YAML task may instead give a plain ``template`` string.

Prompt layout (as in FormatSpread): instruction, blank line, k demonstrations separated by blank
lines, blank line, the test input ending at the empty output field. With a chat template the
demonstrations can instead be turns of a conversation (``fewshot_as_multiturn``).

Three output types, as in lm-eval: ``generate`` (responses → answer filters → metrics),
``multiple_choice`` (loglikelihood of each choice; gold as an index or as the choice text) and
``loglikelihood_rolling`` (the whole text's loglikelihood → word/byte perplexity, bits per byte).
A fourth, ``requests``, is for a task that asks several kinds of request per document (TOFU: the
loglikelihood of the answer, its paraphrase and perturbed answers, and a greedy generation): a
subclass gives ``doc_requests(doc)`` (a list of :class:`Request`), ``score_outputs(doc, outputs)``
(per-example metrics) and ``aggregate_rows(rows)`` (corpus metrics), and the runner does the rest.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llmgen.errors import LlmgenError
from llmgen.prompts.render import PromptStructure, Renderer
from llmgen.registry import Registry
from llmgen.tasks.scoring import (
    _DEFAULT_TARGET_FILTER,
    METRICS,
    Scored,
    _mean,
    apply_filters,
    build_filters,
    choice_scores,
    generation_scores,
)

if TYPE_CHECKING:  # the backends import torch; tasks load without it
    from llmgen.backends.base import Backend, SamplingConfig
    from llmgen.prompts.chat import Prompt

# "lmeval": an lm-eval task run by lm-eval's own evaluator (llmgen.tasks.lmeval); its documents are placeholders
# "requests": the task builds each document's requests itself (Task.doc_requests), e.g. TOFU
OUTPUT_TYPES = ("generate", "multiple_choice", "loglikelihood_rolling", "lmeval", "requests")
REQUEST_KINDS = ("loglikelihood", "generate")


@dataclass(frozen=True)
class Request:
    """One backend request of a ``requests`` task's document.

    ``loglikelihood``: the summed logprob of ``continuation`` after ``prompt`` (tokenised as a
    pair, ``backends.base.encode_pair``), with the EOS token appended when ``eos`` (TOFU scores
    answers with their EOS, as its labels do). ``generate``: completions of ``prompt`` under
    ``sampling`` (the runner caps ``max_tokens`` at ``--max-tokens`` when given). A prompt is a
    string or chat messages; messages go through the model's chat template
    (``llmgen.prompts.chat.apply_chat_template``, the one place templates are applied).
    """

    kind: str
    prompt: Prompt
    continuation: str = ""
    eos: bool = False
    sampling: SamplingConfig | None = None  # for kind "generate"

    def __post_init__(self) -> None:
        if self.kind not in REQUEST_KINDS:
            raise LlmgenError(f"unknown request kind {self.kind!r} (known: {', '.join(REQUEST_KINDS)})")
        if self.kind == "generate" and self.sampling is None:
            raise LlmgenError("a generate request needs its sampling settings")


def default_renderer(fields: Sequence[tuple[str, str]], output_descriptor: str, output: str) -> str:
    """``Descriptor: text`` lines, then ``Output descriptor:`` (+ `` output`` for demonstrations)."""
    lines = [f"{d}: {t}" for d, t in fields]
    lines.append(f"{output_descriptor}: {output}" if output else f"{output_descriptor}:")
    return "\n".join(lines)


def _doc_fields(template: str) -> list[str]:
    return re.findall(r"{(\w+)[^{}]*}", template)


@dataclass
class Task:
    """One evaluation task: documents, how to render them, and how to score responses."""

    name: str
    docs: list[dict[str, Any]]
    input_fields: list[tuple[str, str]] = field(default_factory=lambda: [("Question", "question")])
    output_descriptor: str = "Answer"
    target_key: str = "target"
    instruction: str = ""
    template: str | None = None  # a plain format string overrides fields rendering
    fewshot_docs: list[dict[str, Any]] = field(default_factory=list)
    num_fewshot: int = 0
    output_type: str = "generate"  # or "multiple_choice", "loglikelihood_rolling"
    choices_key: str | None = None  # field holding the choices ...
    choices_list: list[str] | None = None  # ... or the same choices for every document
    choice_prefix: str = " "  # between the prompt and a choice (lm-eval's target_delimiter)
    metrics: tuple[str, ...] = ("exact_match",)
    extract: str | Sequence[str | dict[str, Any]] = "strip"  # filters applied to responses
    target_extract: str | Sequence[str | dict[str, Any]] | None = None  # filters applied to the reference
    stop: tuple[str, ...] = ("\n",)
    max_tokens: int = 32
    description: str = ""
    system_prompt: str = ""
    fewshot_sampler: str = "first"  # or "random": k demonstrations drawn per document from fewshot_seed
    fewshot_seed: int = 1234
    fewshot_as_multiturn: bool = False  # with a chat template: demonstrations as user/assistant turns
    # The prompt's structure for the prompt layer (``llmgen.prompts.render``): None for a task declared as
    # ``input_fields`` (one field each, then ``output_descriptor``) or a template; a PromptStructure for a
    # task with its own layout (enumerations, fixed text), whose original format writes its documents.
    prompt: PromptStructure | None = None
    skipped: int = 0  # raw instances that did not parse in the original format (dropped, as the reference)
    # Documents fall in groups by this field (TOFU's evaluation sets): --limit keeps the first N of
    # each group, and a row's doc_id is "<group>-<index in the group>".
    group_key: str | None = None

    def __post_init__(self) -> None:
        if not self.docs:
            raise LlmgenError(f"empty dataset: task {self.name!r} has no examples")
        if self.output_type not in OUTPUT_TYPES:
            raise LlmgenError(f"task {self.name!r}: output_type must be one of {', '.join(OUTPUT_TYPES)}, got {self.output_type!r}")
        if self.output_type == "multiple_choice" and not (self.choices_key or self.choices_list):
            raise LlmgenError(f"task {self.name!r}: a multiple_choice task needs choices (a field or a list)")
        if self.fewshot_sampler not in ("first", "random"):
            raise LlmgenError(f"task {self.name!r}: fewshot sampler must be first or random, got {self.fewshot_sampler!r}")
        self._filters = build_filters(self.extract)
        target = self.target_extract
        if target is None:
            target = _DEFAULT_TARGET_FILTER.get(self.extract, "strip") if isinstance(self.extract, str) else "strip"
        self._target_filters = build_filters(target)
        for m in self.metrics:
            metric = METRICS.get(m)
            if metric.output_type != self.output_type:
                known = [n for n, x in METRICS.items() if x.output_type == self.output_type]
                raise LlmgenError(f"task {self.name!r}: unknown metric {m!r} for {self.output_type} (known: {', '.join(known)})")
        needed = [k for _, k in self.input_fields] if self.template is None else _doc_fields(self.template)
        if self.output_type in ("loglikelihood_rolling", "lmeval"):
            needed = []
        needed = needed + [self.target_key] + ([self.choices_key] if self.choices_key else [])
        needed += [self.group_key] if self.group_key else []
        for i, doc in enumerate(self.docs):
            for k in needed:
                if k not in doc:
                    raise LlmgenError(f"task {self.name!r}: example {i} has no field {k!r}")
            if self.output_type == "multiple_choice":
                self.gold_index(doc, i)  # choices and gold checked before any model loads
        if self.num_fewshot < 0:
            raise LlmgenError(f"task {self.name!r}: num_fewshot must be >= 0, got {self.num_fewshot}")
        if self.num_fewshot > len(self.fewshot_docs):
            raise LlmgenError(f"task {self.name!r}: {self.num_fewshot}-shot needs {self.num_fewshot} demonstrations, has {len(self.fewshot_docs)}")

    # --- rendering ------------------------------------------------------------------------------
    def fields_of(self, doc: dict) -> list[tuple[str, str]]:
        return [(d, str(doc[k])) for d, k in self.input_fields]

    def target_of(self, doc: dict) -> str:
        """The reference as text (for a multiple-choice task, the gold choice)."""
        if self.output_type == "multiple_choice":
            return self.choices_of(doc)[self.gold_index(doc)]
        return str(doc[self.target_key])

    def render_example(self, doc: dict, with_answer: bool, renderer: Renderer | None = None) -> str:
        answer = self.target_of(doc) if with_answer else ""
        if renderer is None and self.prompt is not None:
            # a task with its own layout (enumerations, fixed text) is written in its original format;
            # the query ends at the output descriptor, the choice_prefix starts the answer
            text = self.prompt.render_original(doc, answer or None)
            return text if with_answer else text.rstrip()
        if self.template is not None:
            text = self.template.format(**doc)
            return f"{text}{self.choice_prefix}{answer}" if with_answer else text
        return (renderer or default_renderer)(self.fields_of(doc), self.output_descriptor, answer)

    def demonstrations(self, doc: dict, k: int, doc_id: int = 0) -> list[dict]:
        """The k demonstrations for one document: the first k, or k drawn from a seeded sampler.

        The random sampler seeds from (fewshot_seed, doc_id), so a document's demonstrations depend
        only on the task and its position, not on ``--limit`` or on which documents ran before; a
        demonstration identical to the document itself is skipped.
        """
        if k > len(self.fewshot_docs):
            raise LlmgenError(f"task {self.name!r}: {k}-shot needs {k} demonstrations, has {len(self.fewshot_docs)}")
        if k < 0:
            raise LlmgenError(f"task {self.name!r}: num_fewshot must be >= 0, got {k}")
        if self.fewshot_sampler == "first":
            return self.fewshot_docs[:k]
        pool = random.Random(f"{self.fewshot_seed}:{doc_id}").sample(self.fewshot_docs, min(k + 1, len(self.fewshot_docs)))
        return [d for d in pool if d is not doc and d != doc][:k]

    def _num_fewshot(self, num_fewshot: int | None) -> int:
        return self.num_fewshot if num_fewshot is None else num_fewshot

    def build_prompt(self, doc: dict, renderer: Renderer | None = None, num_fewshot: int | None = None,
                     doc_id: int = 0, with_system: bool = True) -> str:
        """System prompt, instruction, demonstrations in the same format, then the test input."""
        if self.output_type == "loglikelihood_rolling":
            return str(doc[self.target_key])
        demos = self.demonstrations(doc, self._num_fewshot(num_fewshot), doc_id)
        parts = [p for p in (self.system_prompt if with_system else "", self.instruction) if p]
        parts += [self.render_example(d, True, renderer) for d in demos]
        parts.append(self.render_example(doc, False, renderer))
        return "\n\n".join(parts)

    def build_messages(self, doc: dict, renderer: Renderer | None = None, num_fewshot: int | None = None,
                       doc_id: int = 0) -> list[dict[str, str]]:
        """The prompt as chat messages: the system prompt, then either one user turn holding the
        whole prompt or (``fewshot_as_multiturn``) one user/assistant pair per demonstration."""
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        if not self.fewshot_as_multiturn:
            return system + [{"role": "user", "content": self.build_prompt(doc, renderer, num_fewshot, doc_id, False)}]
        turns: list[dict[str, str]] = []
        for d in self.demonstrations(doc, self._num_fewshot(num_fewshot), doc_id):
            turns += [{"role": "user", "content": self.render_example(d, False, renderer)},
                      {"role": "assistant", "content": self.target_of(d)}]
        turns.append({"role": "user", "content": self.render_example(doc, False, renderer)})
        if self.instruction:
            turns[0] = {"role": "user", "content": f"{self.instruction}\n\n{turns[0]['content']}"}
        return system + turns

    def choices_of(self, doc: dict) -> list[str]:
        choices = self.choices_list if self.choices_list is not None else doc[self.choices_key]  # type: ignore[index]
        if not isinstance(choices, list | tuple) or not choices:
            raise LlmgenError(f"task {self.name!r}: field {self.choices_key!r} must be a non-empty list")
        return [str(c) for c in choices]

    def gold_index(self, doc: dict, i: int | None = None) -> int:
        """The gold choice's index: the target is an index (int or digit string) or a choice's text."""
        choices = self.choices_of(doc)
        gold = doc[self.target_key]
        where = f"task {self.name!r}" + (f": example {i}" if i is not None else "")
        if isinstance(gold, bool):
            raise LlmgenError(f"{where} target {gold!r} is neither a choice index nor a choice")
        if isinstance(gold, int):
            if not 0 <= gold < len(choices):
                raise LlmgenError(f"{where} target index {gold} is out of range for {len(choices)} choices")
            return gold
        gold = str(gold)
        if gold in choices:
            return choices.index(gold)
        if gold.strip().isdigit() and 0 <= int(gold) < len(choices):
            return int(gold)
        raise LlmgenError(f"{where} target {gold!r} is not among its choices {choices}")

    # --- scoring --------------------------------------------------------------------------------
    def gold_answer(self, doc: dict) -> str:
        """The reference after the target filters (what extracted responses are compared with)."""
        out = apply_filters(self._target_filters, [self.target_of(doc)])
        return out[0] if out else ""

    def filtered(self, responses: list[str]) -> list[str]:
        """The responses through the task's answer filters (what ``exact_match`` compares with the gold)."""
        return apply_filters(self._filters, responses)

    def is_correct(self, response: str, doc: dict) -> bool:
        """Whether one response scores 1 on the task's outcome metric (its first metric; see
        ``llmgen.tasks.scoring``), the per-sample outcome pass@k counts and the bandit rewards."""
        return bool(self.score_generation(doc, [response]).correct[0])

    def score_generation(self, doc: dict, responses: list[str]) -> Scored:
        """One document's responses scored by every metric of the task (``scoring.generation_scores``)."""
        return generation_scores(self.metrics, self._filters, self.gold_answer(doc), responses)

    def score_responses(self, responses: list[str], doc_id: int) -> tuple[list[bool], dict[str, float]]:
        """(per-sample outcome, per-document metrics without pass@k) of document ``doc_id``'s
        responses: the one generation scorer of plain ``llmgen eval``, ``--formats`` and the bandit.
        A task with its own metric code (an lm-eval task's ``process_results``) overrides this."""
        scored = self.score_generation(self.docs[doc_id], responses)
        return scored.correct, scored.values

    def score_choices(self, doc: dict, logprobs: list[float], doc_id: int | None = None) -> Scored:
        """One document's choice loglikelihoods scored by every metric of the task (``scoring.choice_scores``)."""
        return choice_scores(self.metrics, self.choices_of(doc), logprobs, self.gold_index(doc, doc_id))

    def generation_sampling(self, backend: Backend) -> SamplingConfig | None:
        """The task's own generation settings (an lm-eval task's ``generation_kwargs``), or None for
        the runner's (``--num-samples``, ``--temperature``, ..., the task's stop and budget)."""
        return None

    def score(self, doc: dict, scored: Scored) -> dict[str, Any]:
        """Per-document values of the task's metrics (pass@k is expanded by the runner)."""
        return {m: METRICS.get(m).score(scored) for m in self.metrics if m != "pass@k"}

    def aggregate(self, values: dict[str, list]) -> dict[str, float]:
        """Corpus-level metrics from per-document values (means, or perplexity ratios)."""
        return {m: (METRICS.get(m).aggregate(v) if m in METRICS else _mean(v)) for m, v in values.items()}

    # --- tasks with several request kinds per document (output_type "requests") ---------------
    def doc_requests(self, doc: dict) -> list[Request]:
        """The backend requests of one document; a ``requests`` task overrides this."""
        raise LlmgenError(f"task {self.name!r} ({self.output_type}) does not build its own requests")

    def score_outputs(self, doc: dict, outputs: list) -> dict[str, float]:
        """Per-example metrics from the outputs of ``doc_requests(doc)``, in order (a
        ``LoglikelihoodResult`` per loglikelihood request, the completions per generate request)."""
        raise LlmgenError(f"task {self.name!r} ({self.output_type}) does not score request outputs")

    def aggregate_rows(self, rows: list[dict]) -> dict[str, float]:
        """Corpus metrics from the per-example rows (default: ``aggregate`` of each metric's values)."""
        values: dict[str, list] = {}
        for r in rows:
            for m, v in r["metrics"].items():
                values.setdefault(m, []).append(v)
        return self.aggregate(values)

    # --- documents ------------------------------------------------------------------------------
    def limit_docs(self, n: int | None) -> list[dict[str, Any]]:
        """The first ``n`` documents (``--limit``), or the first ``n`` of each group (``group_key``)."""
        if n is None:
            return self.docs
        if self.group_key is None:
            return self.docs[:n]
        seen: Counter = Counter()
        kept = []
        for d in self.docs:
            seen[d[self.group_key]] += 1
            if seen[d[self.group_key]] <= n:
                kept.append(d)
        return kept

    def doc_ids(self) -> list[int | str]:
        """Each document's id in the rows: its index, or ``<group>-<index in its group>``."""
        if self.group_key is None:
            return list(range(len(self.docs)))
        seen: Counter = Counter()
        ids: list[int | str] = []
        for d in self.docs:
            ids.append(f"{d[self.group_key]}-{seen[d[self.group_key]]}")
            seen[d[self.group_key]] += 1
        return ids

    def describe(self) -> dict[str, Any]:
        out = {"name": self.name, "output_type": self.output_type, "metrics": list(self.metrics),
               "num_examples": len(self.docs), "num_fewshot": self.num_fewshot, "description": self.description}
        if self.group_key is not None:
            out["counts"] = dict(Counter(d[self.group_key] for d in self.docs))
        return out


TASKS: Registry[Callable[..., Task]] = Registry("task")

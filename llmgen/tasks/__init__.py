"""Evaluation tasks: one ``Task`` type, its answer-extractor and metric registries, and tasks read
from YAML, JSONL, hub datasets or the catalogue of the papers' datasets.

A task declares its prompt as *fields with descriptors* (``Question: ...``) and an output
descriptor (``Answer:``) rather than as one opaque template, so that the same task can be rendered
in any plausible format of the FormatSpread grammar (``llmgen eval --formats K``). A YAML task may
instead give a plain ``template`` string.

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

import math as pymath  # not "math": the llmgen.tasks.math submodule takes that name in this package
import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmgen.errors import LlmgenError
from llmgen.io import read_jsonl
from llmgen.registry import Registry
from llmgen.tasks.math_answers import last_boxed_answer, normalize_final_answer

if TYPE_CHECKING:  # the backends import torch; tasks load without it
    from llmgen.backends.base import SamplingConfig
    from llmgen.prompts.chat import Prompt

# A renderer turns (fields, output descriptor, output text) into the text of one example.
Renderer = Callable[[Sequence[tuple[str, str]], str, str], str]

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


# --- answer extractors ---------------------------------------------------------------------------
# A filter step maps the list of a document's responses to a new list (lm-eval's Filter.apply on one
# document). Per-response steps (regex, numbers, strip, math) keep the list's length; reducing steps
# (take_first, majority_vote) return one element. FILTERS maps a name to a factory taking the step's
# keyword arguments, so a YAML ``filters:`` list is read without special cases.

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def _clean_number(s: str) -> str:
    s = s.replace(",", "")
    return s[:-2] if s.endswith(".0") else s


def first_number(text: str) -> str:
    """The first number in a response (commas dropped, trailing ``.0`` removed), or ``""``."""
    m = _NUMBER.search(text)
    return _clean_number(m.group(0)) if m else ""


def last_number(text: str) -> str:
    """The last number in a response (commas dropped, trailing ``.0`` removed), or ``""``."""
    found = _NUMBER.findall(text)
    return _clean_number(found[-1]) if found else ""


def strip_answer(text: str) -> str:
    return text.strip().rstrip(".").strip()


def math_answer(text: str) -> str:
    """A math answer (``\\boxed{}``, "final answer", last number), normalised (see math_answers)."""
    from llmgen.tasks.math_answers import canonical_math_answer, extract_answer

    return canonical_math_answer(extract_answer(text))


def math_normalize(text: str) -> str:
    """A reference answer normalised like ``math_answer``'s output (equal strings = equal answers)."""
    from llmgen.tasks.math_answers import canonical_math_answer

    return canonical_math_answer(text)


def regex_extract(pattern: str, group_select: int = 0, fallback: str = "[invalid]") -> Callable[[str], str]:
    """lm-eval's ``regex`` filter: the ``group_select``-th match (``-1`` = last) of ``findall``.

    As in lm-eval, a pattern with several groups yields the first non-empty group of the match, and
    the result is stripped; no match (or an out-of-range selection) gives ``fallback``.
    """
    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise LlmgenError(f"bad regex_pattern {pattern!r}: {e}") from None

    def extract(text: str) -> str:
        found = rx.findall(text)
        if not found or not -len(found) <= group_select < len(found):
            return fallback
        m = found[group_select]
        if isinstance(m, tuple):
            m = next((g for g in m if g), fallback)
        return m.strip()

    return extract


FilterStep = Callable[[list[str]], list[str]]
FILTERS: Registry[Callable[..., FilterStep]] = Registry("filter")


def _per_response(fn: Callable[[str], str]) -> FilterStep:
    step = lambda responses: [fn(r) for r in responses]  # noqa: E731
    step.per_response = True  # type: ignore[attr-defined]
    return step


FILTERS.register("strip", lambda: _per_response(strip_answer))
FILTERS.register("first_number", lambda: _per_response(first_number))
FILTERS.register("last_number", lambda: _per_response(last_number))
FILTERS.register("math", lambda: _per_response(math_answer))
FILTERS.register("math_normalize", lambda: _per_response(math_normalize))
# the pass@N reference's grading (refine nbs/eval.ipynb): the last \boxed{} answer, normalize_final_answer
FILTERS.register("math_boxed", lambda: _per_response(lambda t: normalize_final_answer(last_boxed_answer(t) or "")))
FILTERS.register("math_boxed_normalize", lambda: _per_response(normalize_final_answer))
FILTERS.register("lowercase", lambda: _per_response(str.lower))
FILTERS.register("regex", lambda regex_pattern=r"#### (\-?[0-9\.\,]+)", group_select=0, fallback="[invalid]":
                 _per_response(regex_extract(regex_pattern, int(group_select), fallback)))
FILTERS.register("take_first", lambda: lambda responses: responses[:1])
FILTERS.register("majority_vote", lambda: lambda responses: [Counter(responses).most_common(1)[0][0]] if responses else [])


def build_filters(spec: str | Sequence[str | dict[str, Any]]) -> list[FilterStep]:
    """Filter steps from a name (``"strip"``) or a list of names / ``{function: name, **kwargs}``."""
    steps = [spec] if isinstance(spec, str) else list(spec)
    out = []
    for s in steps:
        name, kwargs = (s, {}) if isinstance(s, str) else (s.get("function"), {k: v for k, v in s.items() if k != "function"})
        if not isinstance(name, str):
            raise LlmgenError(f"a filter step needs a 'function' name, got {s!r}")
        factory = FILTERS.get(name)
        try:
            out.append(factory(**kwargs))
        except TypeError:
            raise LlmgenError(f"filter {name!r}: bad arguments {sorted(kwargs)}") from None
    return out


def apply_filters(steps: Sequence[FilterStep], responses: list[str], per_response_only: bool = False) -> list[str]:
    for step in steps:
        if per_response_only and not getattr(step, "per_response", False):
            continue
        responses = step(responses)
    return responses


# --- metrics -------------------------------------------------------------------------------------
# A metric scores one document (``score``) and aggregates the per-document values (``aggregate``):
# accuracies are means; perplexities are corpus-level ratios of (loglikelihood, count) pairs, as in
# lm-eval's weighted_perplexity / bits_per_byte.


@dataclass(frozen=True)
class Scored:
    """What a metric sees for one document."""

    predictions: list[str] = field(default_factory=list)  # filtered responses (generate)
    correct: list[bool] = field(default_factory=list)  # per raw response, per-response filters only
    gold: str = ""
    responses: list[str] = field(default_factory=list)  # raw responses
    choice_logprobs: list[float] = field(default_factory=list)
    choices: list[str] = field(default_factory=list)
    gold_index: int = -1
    loglikelihood: float = 0.0
    num_words: int = 0  # word and byte counts of a rolling text (the backend's RollingResult, lm-eval's rules)
    num_bytes: int = 0


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def weighted_perplexity(items: Sequence[tuple[float, int]]) -> float:
    """exp(-Σ loglikelihood / Σ count) (lm-eval's weighted_perplexity)."""
    return pymath.exp(-sum(a for a, _ in items) / sum(b for _, b in items))


def bits_per_byte(items: Sequence[tuple[float, int]]) -> float:
    """-Σ loglikelihood / Σ bytes / ln 2 (lm-eval's bits_per_byte)."""
    return -sum(a for a, _ in items) / sum(b for _, b in items) / pymath.log(2)


@dataclass(frozen=True)
class Metric:
    output_type: str
    score: Callable[[Scored], Any]
    aggregate: Callable[[list], float] = _mean


METRICS: Registry[Metric] = Registry("metric")


def _exact_match(s: Scored) -> float:
    return _mean([float(bool(p) and p == s.gold) for p in s.predictions])


def choice_prediction(logprobs: Sequence[float], lengths: Sequence[float]) -> int:
    """The index lm-eval 0.4.13 predicts (``api/task.py`` ``process_results``, multiple_choice):
    ``np.argmax(lls / lengths)`` in float64, first index on ties, a zero length giving numpy's
    ±inf/nan rather than an error, so every case, empty choices included, is lm-eval's."""
    import numpy as np

    with np.errstate(divide="ignore", invalid="ignore"):
        return int(np.argmax(np.asarray(logprobs, dtype=np.float64) / np.asarray(lengths, dtype=np.float64)))


def _choice_acc(norm: Callable[[str], float]) -> Callable[[Scored], float]:
    return lambda s: float(choice_prediction(s.choice_logprobs, [norm(c) for c in s.choices]) == s.gold_index)


METRICS.register("exact_match", Metric("generate", _exact_match))
METRICS.register("contains", Metric("generate", lambda s: _mean([float(s.gold.lower() in r.lower()) for r in s.responses])))
METRICS.register("pass@k", Metric("generate", lambda s: None))  # expanded to pass@1, pass@2, ... by the runner
METRICS.register("acc", Metric("multiple_choice", _choice_acc(lambda c: 1.0)))
# lm-eval 0.4.13 (api/task.py process_results): acc_norm divides by the choice's length in characters
# (``len(choice)`` of the choice string, without target_delimiter), acc_bytes by its UTF-8 bytes
METRICS.register("acc_norm", Metric("multiple_choice", _choice_acc(lambda c: float(len(c)))))
METRICS.register("acc_bytes", Metric("multiple_choice", _choice_acc(lambda c: float(len(c.encode("utf-8"))))))
METRICS.register("word_perplexity", Metric("loglikelihood_rolling", lambda s: (s.loglikelihood, s.num_words),
                                           weighted_perplexity))
METRICS.register("byte_perplexity", Metric("loglikelihood_rolling", lambda s: (s.loglikelihood, s.num_bytes),
                                           weighted_perplexity))
METRICS.register("bits_per_byte", Metric("loglikelihood_rolling", lambda s: (s.loglikelihood, s.num_bytes),
                                         bits_per_byte))

DEFAULT_METRICS = {"generate": ("exact_match",), "multiple_choice": ("acc", "acc_norm"),
                   "loglikelihood_rolling": ("word_perplexity", "byte_perplexity", "bits_per_byte")}
# Answer extraction applied to the reference when the task names none: numbers compare as numbers,
# math answers as normalised math answers, anything else as stripped text.
_DEFAULT_TARGET_FILTER = {"first_number": "first_number", "last_number": "first_number", "math": "math_normalize",
                          "math_boxed": "math_boxed_normalize"}


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
    # FormatSpread: the Layout (fields and enumerations, ``llmgen.prompts.formats``) that prompt formats render,
    # the Format the documents are written in, and, for multiple choice over an enumeration, its key
    # (the answers are that enumeration's item numbers, spelled per format) and how an answer spells one.
    layout: Any = None  # None: one field per ``input_fields`` entry, then ``output_descriptor``
    original_format: Any = None  # None: the grammar's original format
    answer_key: str | None = None
    answer_template: str = "{}"
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

    # --- prompt formats (FormatSpread) ---------------------------------------------------------------
    def prompt_layout(self):
        """The FormatSpread layout: the task's own (enumerations included), or one field per input field."""
        from llmgen.prompts.formats import Field, Layout

        if self.layout is not None:
            return self.layout
        return Layout(fields=tuple(Field(d, k) for d, k in self.input_fields), output=self.output_descriptor)

    def format_answers(self, fmt) -> list[str]:
        """The answer set in ``fmt``: the choices, or the answer enumeration's item numbers as ``fmt`` spells them."""
        if self.answer_key is None:
            return self.choices_of(self.docs[0])
        enum = self.prompt_layout().enumeration(self.answer_key)
        size = len(self.docs[0][self.answer_key])
        return [self.answer_template.format(fmt.option_label(i, enum)) for i in range(size)]

    def format_gold(self, doc: dict, fmt) -> str:
        """The gold answer of ``doc`` in ``fmt`` (an option index becomes that format's number)."""
        if self.answer_key is not None:
            return self.format_answers(fmt)[int(doc[self.target_key])]
        return self.target_of(doc)

    def format_prompt(self, fmt, demos: Sequence[dict], doc: dict) -> str:
        """Instruction, demonstrations and the query (ending at the open output field) rendered in ``fmt``."""
        from llmgen.prompts.formats import build_prompt

        return build_prompt(fmt, self.prompt_layout(), self.instruction,
                            [(d, self.format_gold(d, fmt)) for d in demos], doc)

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

    def is_correct(self, response: str, doc: dict) -> bool:
        """Whether one response, through the per-response filters, equals the reference answer."""
        return bool(self.score_generation(doc, [response]).correct[0])

    def score_generation(self, doc: dict, responses: list[str]) -> Scored:
        gold = self.gold_answer(doc)
        each = apply_filters(self._filters, responses, per_response_only=True)
        if "contains" in self.metrics:
            correct = [gold.lower() in r.lower() for r in responses]
        else:
            correct = [bool(e) and e == gold for e in each]
        return Scored(predictions=apply_filters(self._filters, responses), correct=correct, gold=gold,
                      responses=responses)

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


# --- built-in: arithmetic word problems --------------------------------------------------------

def make_arithmetic(n: int = 200, steps: int = 1, seed: int = 1234, num_fewshot: int = 3) -> Task:
    """The ``arithmetic`` eval tasks: ``n`` distinct problems of the one arithmetic generator."""
    from llmgen.tasks.math import arithmetic_problem

    rng = random.Random(seed)
    docs, seen = [], set()
    while len(docs) < n + 8:
        d = arithmetic_problem(rng, steps)
        if d["question"] not in seen:
            seen.add(d["question"])
            docs.append(d)
    return Task(
        name="arithmetic" if steps == 1 else f"arithmetic_{steps}step", docs=docs[8:], fewshot_docs=docs[:8],
        num_fewshot=num_fewshot, input_fields=[("Question", "question")], output_descriptor="Answer",
        metrics=("exact_match", "pass@k"), extract="first_number", stop=("\n",), max_tokens=16,
        description=f"generated {steps}-step arithmetic word problems with exact integer answers",
    )


TASKS.register("arithmetic", lambda: make_arithmetic(steps=1))
TASKS.register("arithmetic_2step", lambda: make_arithmetic(steps=2))


# --- file-defined tasks -------------------------------------------------------------------------

def task_from_jsonl(path: str | Path) -> Task:
    """Rows with ``prompt`` and ``target``; scored by exact match of the stripped response."""
    rows = read_jsonl(path, required=("prompt", "target"))
    return Task(name=Path(path).stem, docs=rows, template="{prompt}", metrics=("exact_match",),
                description=f"JSONL prompts from {path}")


YAML_KEYS = {"name", "data", "dataset", "template", "fields", "output", "target", "target_extract", "metric",
             "metrics", "choices", "choice_prefix", "stop", "max_tokens", "num_fewshot", "fewshot_data", "fewshot",
             "instruction", "system_prompt", "fewshot_as_multiturn", "extract", "filters", "output_type",
             "description"}
FEWSHOT_KEYS = {"split", "data", "sampler", "seed"}


def read_yaml(path: Path) -> Any:
    """A YAML file's content; a syntax error names its line and column, bad bytes their offset."""
    import yaml

    if not path.is_file():
        raise LlmgenError(f"task file not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise LlmgenError(f"task file {path} is not UTF-8 text (byte {e.start})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise LlmgenError(f"malformed YAML in {path}{where}: {problem}") from None


def _yaml_docs(spec: dict, path: Path) -> tuple[list[dict], list[dict]]:
    """Test documents and few-shot documents of a YAML task (local files or a hub dataset)."""
    from llmgen.tasks.hub import load_split

    if ("data" in spec) == ("dataset" in spec):
        raise LlmgenError(f"task file {path}: give exactly one of 'data' (local file) or 'dataset' (hub or local dataset)")
    source = spec["data"] if "data" in spec else spec["dataset"]
    docs = load_split(source, path.parent)
    fs = spec.get("fewshot") or {}
    if not isinstance(fs, dict) or set(fs) - FEWSHOT_KEYS:
        raise LlmgenError(f"task file {path}: fewshot must be a mapping with keys {', '.join(sorted(FEWSHOT_KEYS))}")
    if "fewshot_data" in spec or "data" in fs:
        fewshot = load_split(spec.get("fewshot_data", fs.get("data")), path.parent)
    elif "split" in fs:
        fewshot = load_split(source, path.parent, split=fs["split"])
    else:
        fewshot = []
    return docs, fewshot


def task_from_spec(spec: Any, path: Path) -> Task:
    """A native YAML task (see docs/tasks.md): data, prompt, target, output type, filters, metrics."""
    if not isinstance(spec, dict):
        raise LlmgenError(f"malformed task file {path}: expected a mapping")
    unknown = sorted(set(spec) - YAML_KEYS)
    if unknown:
        raise LlmgenError(f"task file {path}: unknown key {unknown[0]!r} (known: {', '.join(sorted(YAML_KEYS))})")
    if "target" not in spec:
        raise LlmgenError(f"task file {path}: missing key 'target'")
    if "data" not in spec and "dataset" not in spec:
        raise LlmgenError(f"task file {path}: missing key 'data' (or 'dataset')")
    if "extract" in spec and "filters" in spec:
        raise LlmgenError(f"task file {path}: give 'extract' or 'filters', not both")
    choices = spec.get("choices")
    output_type = spec.get("output_type", "multiple_choice" if choices is not None else "generate")
    metrics = spec.get("metrics") or ([spec["metric"]] if "metric" in spec else list(DEFAULT_METRICS.get(output_type, ())))
    fields = [(f["descriptor"], f["field"]) for f in spec.get("fields", [])] or [("Question", "question")]
    fs = spec.get("fewshot") or {}
    docs, fewshot = _yaml_docs(spec, path)
    return Task(
        name=spec.get("name", path.stem), docs=docs, fewshot_docs=fewshot, num_fewshot=int(spec.get("num_fewshot", 0)),
        template=spec.get("template") if "fields" not in spec else None, input_fields=fields,
        output_descriptor=spec.get("output", "Answer"), target_key=spec["target"],
        instruction=spec.get("instruction", ""), system_prompt=spec.get("system_prompt", ""),
        output_type=output_type, choices_key=choices if isinstance(choices, str) else None,
        choices_list=list(choices) if isinstance(choices, list) else None, choice_prefix=spec.get("choice_prefix", " "),
        metrics=tuple(metrics), extract=spec.get("filters", spec.get("extract", "strip")),
        target_extract=spec.get("target_extract"), stop=tuple(spec.get("stop", ["\n"])),
        max_tokens=int(spec.get("max_tokens", 32)), description=spec.get("description", f"YAML task {path}"),
        fewshot_sampler=fs.get("sampler", "first"), fewshot_seed=int(fs.get("seed", 1234)),
        fewshot_as_multiturn=bool(spec.get("fewshot_as_multiturn", False)),
    )


def task_from_yaml(path: str | Path) -> Task:
    """A YAML task file; every check (fields, choices, gold) runs here, before any model loads."""
    path = Path(path)
    return task_from_spec(read_yaml(path), path)


CATALOGUE_DIR = Path(__file__).parent / "catalogue"


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def catalogue() -> dict[str, tuple[Path, dict]]:
    """The papers' datasets as task YAMLs shipped with llmgen: task name → (file, spec).

    A catalogue file may list ``variants`` (e.g. one per hub config): each is the file's spec with
    the variant's keys merged in, named ``<name>_<variant>``.
    """
    out: dict[str, tuple[Path, dict]] = {}
    for path in sorted(CATALOGUE_DIR.glob("*.yaml")):
        spec = read_yaml(path)
        variants = spec.pop("variants", None)
        name = spec.get("name", path.stem)
        if not variants:
            out[name] = (path, spec)
        for suffix, over in (variants or {}).items():
            out[f"{name}_{suffix}"] = (path, _merge({**spec, "name": f"{name}_{suffix}"}, over))
    return out


def get_task(name: str) -> Task:
    """A registered task name, a catalogue task, a ``.yaml``/``.yml`` task file, or a ``.jsonl`` prompt file."""
    if name.endswith((".yaml", ".yml")):
        return task_from_yaml(name)
    if name.endswith(".jsonl"):
        return task_from_jsonl(name)
    from llmgen.tasks.lmeval import PREFIX, load_lmeval_task

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


def classification_eval_task(name: str, n: int = 200, num_fewshot: int = 1) -> Task:
    """A FormatSpread classification task for ``llmgen eval``: the recipe's own ``Task``, split as the
    recipe splits it (the demonstration pool are the few-shot documents), ranked by loglikelihood."""
    from llmgen.tasks.classification import DEMO_POOL, demo_pool_split, load_classification_task

    task = load_classification_task(name, n=n + DEMO_POOL, seed=0)
    if task.answer_key is not None:
        raise LlmgenError(f"task {name!r} enumerates options; run it with `llmgen format-spread`")
    pool, examples = demo_pool_split(task.docs, seed=0)  # the FormatSpread recipe's split
    task.docs, task.fewshot_docs, task.num_fewshot = examples, pool, num_fewshot
    return task


def math_task(name: str, docs: list[dict], fewshot_docs: Sequence[dict] = (), num_fewshot: int = 0,
              max_tokens: int = 16, description: str = "", extract: str = "math") -> Task:
    """Direct-answer math problems (``{"problem", "answer"}`` docs), graded by math equivalence.

    One definition for ``llmgen eval --tasks math_generated_d*`` and the pass@N recipe's pass@k
    evaluation: the prompt is ``Problem: ...\nAnswer:`` (``tasks.math.direct_prompt``), responses
    stop at a newline, and ``pass@k`` uses the unbiased estimator of ``evals.passk``. ``extract``:
    "math" (lenient: any final-answer form, numeric equivalence) or "math_boxed" (the pass@N
    reference notebook's: the last ``\\boxed{}`` answer, ``normalize_final_answer``, exact)."""
    return Task(name=name, docs=docs, fewshot_docs=list(fewshot_docs), num_fewshot=num_fewshot,
                input_fields=[("Problem", "problem")], output_descriptor="Answer", target_key="answer",
                metrics=("exact_match", "pass@k"), extract=extract, stop=("\n",), max_tokens=max_tokens,
                description=description)


def math_eval_task(difficulty: int = 2, n: int = 200) -> Task:
    """The pass@N recipe's generated math problems (direct answers), graded by math equivalence.

    The documents are the test side of the one generated split (``math_tasks.generate_task``), the
    few-shot examples its train side; ``llmgen confidence-limiting`` trains on the train side only."""
    from llmgen.tasks.math import generate_task

    train, test = generate_task(n_train=8, n_test=n, difficulty=difficulty, seed=0)
    to_doc = lambda p: {"problem": p.problem, "answer": p.answer}  # noqa: E731
    return math_task(f"math_generated_d{difficulty}", [to_doc(p) for p in test], [to_doc(p) for p in train],
                     num_fewshot=3, description=f"generated multi-step arithmetic/algebra (difficulty {difficulty}), exact answers")


def tofu_data_source() -> str:
    """``$LLMGEN_TOFU_DATA`` (a TOFU folder or hub id), else the synthetic TOFU-format set, the
    same folder ``llmgen npo-unlearning --data synthetic`` reads (``llmgen.tasks.tofu.synthetic_source``)."""
    import os

    from llmgen.tasks.tofu import synthetic_source

    return os.environ.get("LLMGEN_TOFU_DATA") or synthetic_source()


def tofu_eval_task(forget_split: str) -> Task:
    """TOFU's evaluation (probability, ROUGE-L, truth ratio, model utility; forget quality when
    ``$LLMGEN_TOFU_RETAIN_LOGS`` names a retain model's logs) as an eval task
    (``llmgen.tasks.tofu.TofuTask``). The four sets are read once, here; ``$LLMGEN_TOFU_DS_SIZE`` (TOFU
    uses 300) keeps the first N rows of each, and ``--limit`` cuts each set further."""
    import os

    from llmgen.tasks.tofu import load_retain_logs, tofu_task

    ds_size = os.environ.get("LLMGEN_TOFU_DS_SIZE")
    if ds_size is not None and not ds_size.strip().isdigit():
        raise LlmgenError(f"LLMGEN_TOFU_DS_SIZE must be a positive integer, got {ds_size!r}")
    logs = os.environ.get("LLMGEN_TOFU_RETAIN_LOGS")
    return tofu_task(tofu_data_source(), forget_split, ds_size=int(ds_size) if ds_size else None,
                     retain_ratios=load_retain_logs(logs) if logs else None)


_PLUGINS_LOADED = False


def _load_plugin_tasks() -> None:
    """Register the task families' tasks: every module of this package that defines
    ``register_tasks(registry)`` is imported and called (imports are cheap: no torch at module
    level), so a new family module needs no list here."""
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        register = getattr(importlib.import_module(f"{__name__}.{info.name}"), "register_tasks", None)
        if register is not None:
            register(TASKS)


def list_tasks() -> list[str]:
    _load_plugin_tasks()
    return list(TASKS)

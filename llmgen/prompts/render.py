"""The prompt layer: one place that turns a task's document into the text a model is scored on, in
the task's own format or any format of the FormatSpread grammar (``llmgen.prompts.formats``).

A task (``llmgen.tasks.Task``: data + prompt + scorer, as inspect_ai's ``Task(dataset, solver,
scorer)``) describes its prompt in one field, ``Task.prompt``: ``None`` for a task declared as
fields with descriptors (its structure is one field per input field, ``prompt_structure``), or a
:class:`PromptStructure` for a task with its own layout (enumerations, fixed text: the FormatSpread
classification tasks, SNI files, lm-eval tasks read back by ``llmgen.prompts.structure``). The
functions ``answers_in``, ``gold_in``, ``prompt_in`` and ``inputs_in`` render a task's documents in
any ``Format``; the structure's original format reproduces the task's own prompt exactly.

The scored request is cut from the rendered text the same way on every path: the context never ends
in whitespace and the continuation starts with that whitespace (``scored_context``), so plain
``llmgen eval``, ``--formats``, FormatSpread and the lm-eval conversion send the same requests.

This layer sits below the tasks (``llmgen.tasks`` imports it, never the reverse): what it reads of a
task is spelled out in :class:`PromptedTask`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from llmgen.errors import LlmgenError
from llmgen.prompts.formats import Field, Format, Layout, build_prompt

# A renderer turns (fields, output descriptor, output text) into the text of one example.
Renderer = Callable[[Sequence[tuple[str, str]], str, str], str]


@dataclass(frozen=True)
class PromptStructure:
    """A task's prompt as FormatSpread varies it: the layout (fields with descriptors, enumerations,
    fixed text, the open output field), the format its documents are written in, and how answers
    are spelled.

    ``answer_key``: for multiple choice over an enumeration, its key: the answers are that
    enumeration's item numbers as each format spells them (``answer_template`` around each, e.g.
    ``"Option {}"``), so the gold moves with the numbering. ``fewshot_delimiter``: None joins
    instruction, demonstrations and query with blank lines (FormatSpread's prompt); a string joins
    them as lm-eval's ``fewshot_context`` does (the instruction as is, each demonstration followed by
    the delimiter). ``gold_key``: the document field that spells a demonstration's answer (lm-eval's
    own answer text); None: the task's reference. ``per_choice``: (list field, layout field) for a
    task with one prompt per choice (lm-eval's Winogrande): each item of the list fills the layout
    field in turn, and the one answer follows each prompt.
    """

    layout: Layout
    original: Format = field(default_factory=Format.original)
    answer_key: str | None = None
    answer_template: str = "{}"
    fewshot_delimiter: str | None = None
    gold_key: str | None = None
    per_choice: tuple[str, str] | None = None

    def render_original(self, doc: Mapping[str, Any], answer: str | None = None) -> str:
        """One document in the original format (a demonstration when ``answer`` is given)."""
        return self.original.render(self.layout, doc, answer)

    def answer_labels(self, fmt: Format, size: int) -> list[str]:
        """The answer enumeration's ``size`` item numbers as ``fmt`` spells them."""
        enum = self.layout.enumeration(self.answer_key)  # type: ignore[arg-type]
        return [self.answer_template.format(fmt.option_label(i, enum)) for i in range(size)]


class PromptedTask(Protocol):
    """What the prompt layer reads of a task (``llmgen.tasks.Task``)."""

    name: str
    docs: list[dict[str, Any]]
    prompt: PromptStructure | None
    input_fields: list[tuple[str, str]]
    output_descriptor: str
    instruction: str
    template: str | None
    output_type: str
    target_key: str

    def choices_of(self, doc: dict) -> list[str]: ...

    def target_of(self, doc: dict) -> str: ...


def prompt_structure(task: PromptedTask) -> PromptStructure:
    """The task's prompt structure: its own, or one field per input field, then the output descriptor."""
    if task.prompt is not None:
        return task.prompt
    return PromptStructure(Layout(fields=tuple(Field(d, k) for d, k in task.input_fields), output=task.output_descriptor))


def task_layout(task: PromptedTask) -> Layout:
    """The FormatSpread layout of a task declared as fields; a clear error for plain templates."""
    if task.template is not None:
        raise LlmgenError(f"task {task.name!r} is a plain template, not fields with descriptors: "
                          "--formats needs a task declared with fields (YAML 'fields:' or a built-in task)")
    if task.output_type == "requests":
        raise LlmgenError(f"task {task.name!r} builds its own requests; --formats needs a task scored per response")
    return prompt_structure(task).layout


def gold_in(task: PromptedTask, fmt: Format, doc: dict) -> str:
    """The gold answer of ``doc`` in ``fmt`` (an option index becomes that format's number)."""
    st = prompt_structure(task)
    if st.answer_key is not None:
        return st.answer_labels(fmt, len(doc[st.answer_key]))[int(doc[task.target_key])]
    return str(doc[st.gold_key]) if st.gold_key is not None else task.target_of(doc)


def answers_in(task: PromptedTask, fmt: Format, doc: dict | None = None) -> list[str]:
    """The answers of ``doc`` (default: the first document) in ``fmt``: the choices, the answer
    enumeration's item numbers as ``fmt`` spells them, or (one prompt per choice) the one answer
    once per choice."""
    st = prompt_structure(task)
    doc = task.docs[0] if doc is None else doc
    if st.per_choice is not None:
        return [gold_in(task, fmt, doc)] * len(doc[st.per_choice[0]])
    if st.answer_key is None:
        return task.choices_of(doc)
    return st.answer_labels(fmt, len(doc[st.answer_key]))


def prompt_in(task: PromptedTask, fmt: Format, demos: Sequence[dict], doc: dict) -> str:
    """Instruction, answered demonstrations and the query (ending at the open output field) in ``fmt``."""
    st = prompt_structure(task)
    shots = [(d, gold_in(task, fmt, d)) for d in demos]
    if st.fewshot_delimiter is None:
        return build_prompt(fmt, st.layout, task.instruction, shots, doc)
    return (task.instruction + "".join(fmt.render(st.layout, d, a) + st.fewshot_delimiter for d, a in shots)
            + fmt.render(st.layout, doc))


def inputs_in(task: PromptedTask, fmt: Format, demos: Sequence[dict], doc: dict) -> tuple[str, ...] | None:
    """One prompt per choice in ``fmt`` for a task with ``per_choice`` (lm-eval's Winogrande), else
    None: the answers then follow the one prompt of ``prompt_in``."""
    st = prompt_structure(task)
    if st.per_choice is None:
        return None
    many, one = st.per_choice
    return tuple(prompt_in(task, fmt, demos, {**doc, one: value}) for value in doc[many])


def format_renderer(fmt: Format, task: PromptedTask) -> Renderer:
    """A ``Task`` renderer that spells a fields task's examples in ``fmt`` (the query ends at the open output field)."""
    layout = task_layout(task)
    keys = [k for _, k in task.input_fields]

    def render(fields: Sequence[tuple[str, str]], output_descriptor: str, output: str) -> str:
        values = {k: text for k, (_, text) in zip(keys, fields, strict=True)}
        return fmt.render(layout, values, answer=output or None)

    return render


def scored_context(text: str) -> tuple[str, str]:
    """(context, whitespace the continuation starts with): the context never ends in whitespace."""
    context = text.rstrip()
    return context, text[len(context):]


def choice_pairs(text: str, answers: Sequence[str], backend=None, chat: bool = False) -> list[tuple[str, str]]:
    """The (context, continuation) pairs ranked for one rendered prompt (see the module docstring)."""
    context, tail = scored_context(text)
    if chat:  # the chat template separates the answer; the rendered text ends the user turn
        return [(backend.format_prompt(context, chat=True), a) for a in answers]
    return [(context, tail + a) for a in answers]


def generation_prompt(text: str, backend=None, chat: bool = False) -> str:
    context, _ = scored_context(text)
    return backend.format_prompt(context, chat=True) if chat else context

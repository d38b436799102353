"""The prompt layer: one place that turns a task's document into the text a model is scored on, in
the task's own format or any format of the FormatSpread grammar (``llmgen.prompts.formats``).

A task declared as fields with descriptors has a structure (instruction, fields, enumerations,
demonstrations, the open output field: ``task_layout``); a ``Format`` renders it
(``format_renderer``), and the task's original format reproduces the task's own prompt exactly.
The scored request is cut from the rendered text the same way on every path: the context never ends
in whitespace and the continuation starts with that whitespace (``scored_context``), so plain
``llmgen eval``, ``--formats``, FormatSpread and the lm-eval conversion send the same requests.
"""

from __future__ import annotations

from collections.abc import Sequence

from llmgen.errors import LlmgenError
from llmgen.prompts.formats import Format, Layout
from llmgen.tasks.base import Renderer, Task


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


def task_layout(task: Task) -> Layout:
    """The FormatSpread layout of a task declared as fields; a clear error for plain templates."""
    if task.template is not None:
        raise LlmgenError(f"task {task.name!r} is a plain template, not fields with descriptors: "
                          "--formats needs a task declared with fields (YAML 'fields:' or a built-in task)")
    if task.output_type == "requests":
        raise LlmgenError(f"task {task.name!r} builds its own requests; --formats needs a task scored per response")
    return task.prompt_layout()


def format_renderer(fmt: Format, task: Task) -> Renderer:
    """A ``Task`` renderer that spells examples in ``fmt`` (the query ends at the open output field)."""
    layout = task_layout(task)
    keys = [k for _, k in task.input_fields]

    def render(fields: Sequence[tuple[str, str]], output_descriptor: str, output: str) -> str:
        values = {k: text for k, (_, text) in zip(keys, fields, strict=True)}
        return fmt.render(layout, values, answer=output or None)

    return render

"""Classification tasks for format-sensitivity studies: loaders and small generated tasks.

A task is an instruction, a prompt ``Layout`` (input fields with descriptors, an output field), an
answer set and labelled examples. The answer set is either fixed class strings ("positive",
"negative") or, for multiple-choice tasks, the option numbers, which depend on the format: option 2
is "B" in one format and "ii" in another, so gold answers are computed per format (``gold``).

The generated tasks need no download, are deterministic given a seed, and are easy enough that a
135M instruct model sits above chance, which is where format sensitivity is visible.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from llmgen.errors import LlmgenError
from llmgen.formats import Field, Format, Header, Layout, Options, build_prompt
from llmgen.io import read_json, read_jsonl
from llmgen.registry import Registry

MAX_CLASSES = 50


@dataclass
class Example:
    """Field values by key; ``label`` is a class string, or an option index for multiple choice."""

    values: dict[str, str | list[str]]
    label: str | int


@dataclass
class ClassificationTask:
    name: str
    instruction: str
    layout: Layout
    examples: list[Example]
    classes: tuple[str, ...] = ()  # empty for multiple-choice tasks (answers are option numbers)
    demonstrations: list[Example] = field(default_factory=list)  # e.g. SNI "Positive Examples"
    original_format: Format = field(default_factory=Format.original)

    def __post_init__(self) -> None:
        self.classes = tuple(self.classes)
        if not self.examples:
            raise LlmgenError(f"task {self.name!r} has no examples")
        opts = self.layout.options
        if opts is None:
            if len(set(self.classes)) < 2:
                raise LlmgenError(f"task {self.name!r} needs at least 2 classes, got {list(self.classes)}")
            for i, ex in enumerate(self.examples + self.demonstrations):
                if ex.label not in self.classes:
                    raise LlmgenError(f"task {self.name!r} example {i}: label {ex.label!r} is not a class")
        else:
            sizes = {len(ex.values.get(opts.key) or ()) for ex in self.examples + self.demonstrations}
            if len(sizes) != 1 or 0 in sizes:
                raise LlmgenError(f"task {self.name!r}: every example needs the same non-zero number of options")
            for i, ex in enumerate(self.examples + self.demonstrations):
                if not isinstance(ex.label, int) or not 0 <= ex.label < self.num_options:
                    raise LlmgenError(f"task {self.name!r} example {i}: label must be an option index, got {ex.label!r}")

    @property
    def num_options(self) -> int:
        opts = self.layout.options
        return len(self.examples[0].values[opts.key]) if opts else 0

    def answers(self, fmt: Format) -> list[str]:
        """The answer set in this format: the classes, or the option numbers (remapped per format)."""
        if self.layout.options is None:
            return list(self.classes)
        return [fmt.option_label(i) for i in range(self.num_options)]

    def gold(self, example: Example, fmt: Format) -> str:
        return fmt.option_label(example.label) if self.layout.options is not None else str(example.label)

    def prompt(self, fmt: Format, demos: Sequence[Example], example: Example) -> str:
        return build_prompt(fmt, self.layout, self.instruction,
                            [(d.values, self.gold(d, fmt)) for d in demos], example.values)


# --- loaders ------------------------------------------------------------------------------------------

def _first(output) -> str:
    if isinstance(output, list):
        output = output[0] if output else None
    if not isinstance(output, str) or not output.strip():
        return ""
    return output


def _check_classes(name: str, labels: Sequence[str]) -> tuple[str, ...]:
    if not any(labels):
        raise LlmgenError(f"task {name!r} has no labels (every output is empty)")
    if not all(labels):
        raise LlmgenError(f"task {name!r}: an example has an empty output label")
    classes = tuple(sorted(set(labels)))
    if len(classes) > MAX_CLASSES:
        raise LlmgenError(f"task {name!r} has {len(classes)} distinct outputs: not a classification task")
    return classes


def load_sni_task(path: str | Path) -> ClassificationTask:
    """A Super-NaturalInstructions task file: ``Definition``, ``Positive Examples``, ``Instances``.

    Its inputs come pre-formatted, so, as the reference code does for such tasks, the whole input is
    one field ``Input`` and the output field is ``Output``.
    """
    data = read_json(path)
    name = Path(path).stem
    if not isinstance(data, dict) or not isinstance(data.get("Instances"), list):
        raise LlmgenError(f"{path}: not a Super-NaturalInstructions task (no 'Instances' list)")
    definition = data.get("Definition", "")
    definition = definition[0] if isinstance(definition, list) and definition else definition
    if not isinstance(definition, str):
        raise LlmgenError(f"{path}: 'Definition' must be a string or a list of strings")

    def examples(rows, where: str) -> list[Example]:
        out = []
        for i, row in enumerate(rows):
            if not isinstance(row, dict) or not isinstance(row.get("input"), str) or "output" not in row:
                raise LlmgenError(f"{path}: {where}[{i}] needs a string 'input' and an 'output'")
            out.append(Example({"input": row["input"]}, _first(row["output"])))
        return out

    instances = examples(data["Instances"], "Instances")
    positives = examples(data.get("Positive Examples") or [], "Positive Examples")
    if not instances:
        raise LlmgenError(f"{path}: 'Instances' is empty")
    classes = _check_classes(name, [e.label for e in instances])
    positives = [e for e in positives if e.label in classes]
    return ClassificationTask(name, definition.strip(), Layout((Field("Input", "input"),), "Output"),
                              instances, classes, positives)


def load_jsonl_task(path: str | Path, instruction: str = "") -> ClassificationTask:
    """JSONL rows ``{"input": str or {descriptor: text}, "output": str}``; optional ``"options"``.

    With ``options`` (a list of strings) the task is multiple choice and ``output`` is the correct
    option's text or 0-based index. An ``instruction`` key in the first row sets the instruction.
    """
    rows = read_jsonl(path, required=["input", "output"])
    name = Path(path).stem
    first = rows[0]["input"]
    descriptors = list(first) if isinstance(first, dict) else ["Input"]
    keys = [d.lower().replace(" ", "_") for d in descriptors]
    has_options = "options" in rows[0]
    elems: list = [Field(d, k) for d, k in zip(descriptors, keys, strict=True)]
    if has_options:
        elems += [Header("Options"), Options("options")]
    examples = []
    for i, row in enumerate(rows, 1):
        inp = row["input"]
        texts = [inp[d] for d in descriptors if d in inp] if isinstance(inp, dict) else [inp]
        if len(texts) != len(keys) or not all(isinstance(t, str) for t in texts):
            raise LlmgenError(f"{path} line {i}: input must have the string fields {descriptors}")
        values: dict = dict(zip(keys, texts, strict=True))
        label = row["output"]
        if has_options:
            opts = row.get("options")
            if not isinstance(opts, list) or not opts:
                raise LlmgenError(f"{path} line {i}: 'options' must be a non-empty list")
            if isinstance(label, str):
                if label not in opts:
                    raise LlmgenError(f"{path} line {i}: output {label!r} is not one of the options")
                label = opts.index(label)
            values["options"] = [str(o) for o in opts]
        else:
            label = _first(label)
        examples.append(Example(values, label))
    classes = () if has_options else _check_classes(name, [e.label for e in examples])
    instruction = instruction or str(rows[0].get("instruction", ""))
    return ClassificationTask(name, instruction, Layout(tuple(elems), "Answer"), examples, classes)


# --- generated tasks ----------------------------------------------------------------------------------

TASKS: Registry[Callable[[int, int], ClassificationTask]] = Registry("classification task")

PRODUCTS = ("phone", "blender", "jacket", "novel", "laptop", "backpack", "coffee maker", "lamp", "headset",
            "chair", "tent", "camera")
POSITIVE = ("excellent", "wonderful", "reliable", "comfortable", "delightful", "sturdy", "fantastic", "great")
NEGATIVE = ("terrible", "awful", "flimsy", "useless", "disappointing", "broken", "horrible", "poor")
POS_END = ("I would buy it again.", "I recommend it to everyone.", "It made my week.", "Worth every penny.")
NEG_END = ("I returned it the next day.", "Avoid it.", "What a waste of money.", "I regret buying it.")


@TASKS.register("sentiment")
def sentiment_task(n: int = 200, seed: int = 0) -> ClassificationTask:
    """Templated product reviews; the answer is "positive" or "negative"."""
    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        label = rng.choice(("positive", "negative"))
        adjs, ends = (POSITIVE, POS_END) if label == "positive" else (NEGATIVE, NEG_END)
        a, b = rng.sample(adjs, 2)
        text = f"The {rng.choice(PRODUCTS)} I ordered is {a} and {b}. {rng.choice(ends)}"
        examples.append(Example({"review": text}, label))
    return ClassificationTask("sentiment", "Classify the sentiment of the product review as positive or negative.",
                              Layout((Field("Review", "review"),), "Sentiment"), examples, ("negative", "positive"))


@TASKS.register("parity")
def parity_task(n: int = 200, seed: int = 0) -> ClassificationTask:
    """Is a number even or odd?"""
    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        x = rng.randrange(10, 10_000)
        examples.append(Example({"number": str(x)}, "even" if x % 2 == 0 else "odd"))
    return ClassificationTask("parity", "Decide whether the number is even or odd.",
                              Layout((Field("Number", "number"),), "Answer"), examples, ("even", "odd"))


@TASKS.register("comparison")
def comparison_task(n: int = 200, seed: int = 0) -> ClassificationTask:
    """Two numbers in two fields; the answer names the larger one ("first" or "second")."""
    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        a, b = rng.sample(range(1, 1000), 2)
        examples.append(Example({"first": str(a), "second": str(b)}, "first" if a > b else "second"))
    layout = Layout((Field("First number", "first"), Field("Second number", "second")), "Larger")
    return ClassificationTask("comparison", "Which of the two numbers is larger? Answer first or second.",
                              layout, examples, ("first", "second"))


TOPICS = {
    "sports": ("The striker scored twice before halftime.", "The team won the championship in overtime.",
               "She broke the record in the 100 metre sprint.", "The coach benched his star player."),
    "food": ("The soup needs more salt and a pinch of pepper.", "He baked a loaf of sourdough bread.",
             "The restaurant serves fresh pasta every day.", "Add the onions and fry until golden."),
    "science": ("The telescope detected a distant galaxy.", "Cells divide by a process called mitosis.",
                "The chemist measured the reaction rate.", "Water boils at a lower temperature on a mountain."),
    "travel": ("Our flight to Lisbon was delayed by an hour.", "We booked a hotel near the old harbour.",
               "The train crosses the Alps overnight.", "Remember to bring your passport to the airport."),
}


@TASKS.register("topic")
def topic_task(n: int = 200, seed: int = 0) -> ClassificationTask:
    """Multiple choice: the topic of a sentence among 4 shuffled options (answer = option number)."""
    rng = random.Random(seed)
    names = sorted(TOPICS)
    examples = []
    for _ in range(n):
        topic = rng.choice(names)
        opts = rng.sample(names, len(names))
        sentence = rng.choice(TOPICS[topic])
        examples.append(Example({"sentence": sentence, "options": opts}, opts.index(topic)))
    layout = Layout((Field("Sentence", "sentence"), Header("Options"), Options("options")), "Answer")
    return ClassificationTask("topic", "Choose the topic of the sentence from the options.", layout, examples)


def load_classification_task(name: str, n: int = 200, seed: int = 0) -> ClassificationTask:
    """A built-in task by name, or a file: ``.json`` (Super-NaturalInstructions) or ``.jsonl``."""
    path = Path(name)
    if path.suffix == ".json":
        return load_sni_task(path)
    if path.suffix == ".jsonl":
        return load_jsonl_task(path)
    if n < 1:
        raise LlmgenError(f"number of generated examples must be >= 1, got {n}")
    return TASKS.get(name)(n, seed)


def task_summary(task: ClassificationTask) -> Mapping[str, object]:
    return {"name": task.name, "instruction": task.instruction, "layout": task.layout.to_dict(),
            "classes": list(task.classes), "num_options": task.num_options, "num_examples": len(task.examples)}

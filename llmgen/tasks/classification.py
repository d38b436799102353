"""Classification tasks for format-sensitivity studies: loaders and small generated tasks.

Each loads as the one ``llmgen.tasks.Task`` (no parallel task type): an instruction, a prompt
structure (``Task.prompt``: the ``Layout`` with input fields, enumerations and an output field, its
original ``Format``, the answer enumeration), an answer set and labelled documents (field values
plus ``label``). The answer set is either fixed class
strings ("positive", "negative") or, for multiple-choice tasks, the numbers of one enumeration's
items, which depend on the format: option 2 is "B" in one format and "ii" in another, so gold
answers are computed per format (``llmgen.prompts.render.gold_in``).

Super-NaturalInstructions tasks of the paper's runs use the reference's per-task structures
(msclar/formatspread ``parsing_supernatural_instructions_tasks.py``): the raw instance text is read
back into fields and enumerations with the task's original format, so the original format renders
each instance exactly as the file writes it.

The generated tasks need no download, are deterministic given a seed, and are easy enough that a
135M instruct model sits above chance, which is where format sensitivity is visible.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from llmgen.errors import LlmgenError
from llmgen.io import read_json, read_jsonl
from llmgen.prompts.formats import (
    Enumeration,
    Field,
    Format,
    Group,
    Header,
    Layout,
    parse_input,
)
from llmgen.prompts.render import PromptStructure, prompt_structure
from llmgen.registry import Registry
from llmgen.tasks.base import Task

MAX_CLASSES = 50


def classification_task(name: str, instruction: str, prompt: PromptStructure, docs: list[dict],
                        classes: Sequence[str] = (), demonstrations: Sequence[dict] = (), skipped: int = 0,
                        description: str = "") -> Task:
    """A classification task as the one ``Task``: documents are field values plus ``label`` (a class
    string, or an option index for multiple choice over the ``prompt.answer_key`` enumeration; a
    layout with enumerations and no classes answers with its options).

    Checked here, before any model loads: at least 2 classes and every label one of them, or the
    same non-zero number of options everywhere and every label an option index."""
    docs, demos = list(docs), list(demonstrations)
    layout = prompt.layout
    if not docs:
        raise LlmgenError(f"task {name!r} has no examples")
    if prompt.answer_key is None and layout.enumerations and not classes:
        prompt = replace(prompt, answer_key=layout.options.key)  # type: ignore[union-attr]
    if prompt.answer_key is None:
        if len(set(classes)) < 2:
            raise LlmgenError(f"task {name!r} needs at least 2 classes, got {list(classes)}")
        for i, doc in enumerate(docs + demos):
            if doc["label"] not in classes:
                raise LlmgenError(f"task {name!r} example {i}: label {doc['label']!r} is not a class")
        choices = list(classes)
    else:
        sizes = {len(doc.get(prompt.answer_key) or ()) for doc in docs + demos}
        if len(sizes) != 1 or 0 in sizes:
            raise LlmgenError(f"task {name!r}: every example needs the same non-zero number of options")
        size = sizes.pop()
        for i, doc in enumerate(docs + demos):
            label = doc["label"]
            if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < size:
                raise LlmgenError(f"task {name!r} example {i}: label must be an option index, got {label!r}")
        choices = prompt.answer_labels(prompt.original, size)  # the choices as the original format spells them
    return Task(name=name, docs=docs, fewshot_docs=demos, instruction=instruction, prompt=prompt,
                input_fields=[(f.descriptor, f.key) for f in layout.fields if isinstance(f, Field)],
                output_descriptor=layout.output, target_key="label", output_type="multiple_choice",
                choices_list=choices, metrics=("acc",), skipped=skipped,
                description=description or f"classification ({', '.join(choices)}), ranked by loglikelihood")


def example(values: Mapping[str, str | list[str]], label: str | int) -> dict:
    """One document: the field values and the label."""
    return {**values, "label": label}


def classes_of(task: Task) -> tuple[str, ...]:
    """The class strings (empty for multiple choice over an enumeration, whose answers are option numbers)."""
    return () if prompt_structure(task).answer_key else tuple(task.choices_list or ())


def num_options(task: Task) -> int:
    key = prompt_structure(task).answer_key
    return len(task.docs[0][key]) if key else 0


# "Options: (A) text (B) text" as a block of its own, as the reference's multiple-choice SNI structures.
OPTIONS_BLOCK = Group("options_block", (Header("Options"), Enumeration("options")))
OPTIONS_ORIGINAL = Format({"options_block.space": "", "options.separator": " ", "options.numbering": "A"})


DEMO_POOL = 10  # the reference draws demonstrations from the first 10 shuffled instances


def demo_pool_split(examples: list, seed: int) -> tuple[list, list]:
    """Shuffle with the seed; the first ``DEMO_POOL`` are the demonstration pool, the rest are evaluated.

    As the reference (``data_loading.py``); the FormatSpread recipe and ``llmgen eval``'s
    classification tasks both use this split, so they see the same demonstrations and examples.
    """
    if len(examples) <= DEMO_POOL:
        raise LlmgenError(f"{len(examples)} examples: need more than the {DEMO_POOL} of the demonstration pool")
    shuffled = list(examples)
    random.Random(seed).shuffle(shuffled)
    return shuffled[:DEMO_POOL], shuffled[DEMO_POOL:]


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


def sni_structure(name: str) -> tuple[PromptStructure, str | None]:
    """The reference structure and instruction of an SNI task file name (``task1419_...``).

    Tasks outside the paper's runs get one ``Input``/``Output`` field, as the reference does for
    its unformatted tasks.
    """
    m = re.match(r"task0*(\d+)_", name)
    number = m.group(1).zfill(3) if m else ""
    return SNI_STRUCTURES.get(number, SNI_DEFAULT), SNI_INSTRUCTIONS.get(number)


def load_sni_task(path: str | Path) -> Task:
    """A Super-NaturalInstructions task file: ``Definition``, ``Positive Examples``, ``Instances``.

    Each input is read back into the task's fields and enumerations with its original format
    (``formats.parse_input``); instances that do not parse are dropped, as the reference does, and
    counted in ``skipped``. Multiple-choice answers (e.g. "Option 2") become option indices.
    """
    data = read_json(path)
    name = Path(path).stem
    if not isinstance(data, dict) or not isinstance(data.get("Instances"), list):
        raise LlmgenError(f"{path}: not a Super-NaturalInstructions task (no 'Instances' list)")
    definition = data.get("Definition", "")
    definition = definition[0] if isinstance(definition, list) and definition else definition
    if not isinstance(definition, str):
        raise LlmgenError(f"{path}: 'Definition' must be a string or a list of strings")
    structure, instruction = sni_structure(Path(path).name)
    layout, original = structure.layout, structure.original
    parse = structure is not SNI_DEFAULT  # the reference's unformatted tasks: the raw input is the one field's text
    answers = None
    if structure.answer_key:
        answers = structure.answer_labels(original, layout.enumeration(structure.answer_key).sizes[0])

    def examples(rows, where: str) -> tuple[list[dict], int]:
        out, skipped = [], 0
        for i, row in enumerate(rows):
            if not isinstance(row, dict) or not isinstance(row.get("input"), str) or "output" not in row:
                raise LlmgenError(f"{path}: {where}[{i}] needs a string 'input' and an 'output'")
            values = parse_input(row["input"], layout, original) if parse else {"input": row["input"]}
            label: str | int = _first(row["output"])
            if answers is not None and label in answers:
                label = answers.index(label)
            elif answers is not None:
                values = None
            if values is None:
                skipped += 1
                continue
            out.append(example(values, label))
        return out, skipped

    instances, skipped = examples(data["Instances"], "Instances")
    positives, _ = examples(data.get("Positive Examples") or [], "Positive Examples")
    if not instances:
        raise LlmgenError(f"{path}: no instance matches the task's original format ({skipped} skipped)")
    classes: tuple[str, ...] = ()
    if answers is None:
        classes = _check_classes(name, [str(e["label"]) for e in instances])
        positives = [e for e in positives if e["label"] in classes]
    return classification_task(name, (instruction or definition).strip(), structure, instances, classes, positives,
                              skipped=skipped)


def load_jsonl_task(path: str | Path, instruction: str = "") -> Task:
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
        elems.append(OPTIONS_BLOCK)
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
        examples.append(example(values, label))
    classes = () if has_options else _check_classes(name, [e["label"] for e in examples])
    instruction = instruction or str(rows[0].get("instruction", ""))
    prompt = PromptStructure(Layout(tuple(elems), "Answer"), OPTIONS_ORIGINAL if has_options else Format.original())
    return classification_task(name, instruction, prompt, examples, classes)


# --- Super-NaturalInstructions: the reference's per-task structures ------------------------------

def _key(descriptor: str) -> str:
    return descriptor.lower().replace(" ", "_")


def _text_fields(*descriptors: str, space: str = "\n", output: str = "Answer") -> PromptStructure:
    """The reference's ``_one_text_field`` / ``_two_text_fields``: ``D: text`` joined by ``space``."""
    return PromptStructure(Layout(tuple(Field(d, _key(d)) for d in descriptors), output), Format(space=space))


def _enum(key: str, descriptor: str, size: int | tuple[int, ...], **kw) -> Enumeration:
    sizes = tuple(size) if isinstance(size, tuple) else (size,)
    return Enumeration(key, descriptor, sizes=sizes, **kw)


def _options_block(key: str, size: int, separator: str, item_space: str, wrapper: str, numbering: str,
                   header: str = "Options") -> tuple[Group, dict[str, str]]:
    """``Options: a ) text , b ) text``: a header and a descriptor-less enumeration, no spacing between."""
    block = Group(f"{key}_block", (Header(header), _enum(key, "", size)), whitespace_only=True)
    return block, {f"{key}_block.space": "", f"{key}.separator": separator, f"{key}.option_separator": "",
                   f"{key}.item_space": item_space, f"{key}.wrapper": wrapper, f"{key}.numbering": numbering}


def _math_options(wrapper: str, item_space: str, space: str) -> PromptStructure:
    """task1419-1424 / task1678: ``Problem: text`` then ``Options: a ) text , b ) text ...``."""
    block, orig = _options_block("enum1", 5, " ", item_space, wrapper, "a")
    return PromptStructure(Layout((Field("Problem", "problem"), block)), Format(orig, space=space), "enum1")


def _sni_structures() -> dict[str, PromptStructure]:
    """The structures of the 53 tasks of the paper's runs (reference ``run_evals.sh``), by task number."""
    out: dict[str, PromptStructure] = {}
    no_format = SNI_DEFAULT
    for t in ("286", "607", "608", "609", "904", "1502", "1724"):
        out[t] = no_format
    out["050"] = _text_fields("Sentence", "Question", space=" \n")
    for t in ("1186", "1283", "1284"):
        out[t] = _text_fields("System Reference", "Original Reference")
    out["1387"] = _text_fields("Premise", "Hypothesis", space=" <sep> ")
    out["905"] = _text_fields("Tweet", "Label")
    for descriptor, tasks in (("Sentence", "114 155 158 161 162 163"), ("Comment", "322 323 325 326 327 328"),
                              ("Post", "335 337"), ("Passage", "279 280 316 317")):
        for t in tasks.split():
            out[t] = _text_fields(descriptor)
    for t in ("319", "320"):  # "Target: <text> \n<two sentences>"
        out[t] = PromptStructure(Layout((Field("Target", "target"), Field("", "sentences"))), Format(space=" \n"))
    out["133"] = _text_fields("Sentence", "Reason", "Question", space="\n ")
    # Sentence 1: <text> \n Sentence 3: ... \n Option 1: <text> \n Option 2: <text>
    out["065"] = PromptStructure(
        Layout((_enum("sentences", "Sentence", 4, numbers=(0, 2, 3, 4)), _enum("enum1", "Option", 2))),
        Format({"sentences.separator": ": ", "sentences.item_space": " \n ", "sentences.wrapper": "x",
                "enum1.separator": ": ", "enum1.item_space": " \n ", "enum1.wrapper": "x"}, space=" \n "),
        "enum1", "Option {}")
    for t in ("069", "070"):  # Beginning: <text> Middle 1: <text> Middle 2: <text> Ending: <text>
        out[t] = PromptStructure(
            Layout((Field("Beginning", "beginning"), _enum("enum1", "Middle", 2), Field("Ending", "ending"))),
            Format({"enum1.separator": ": ", "enum1.item_space": " ", "enum1.wrapper": "x"}, space=" "), "enum1")
    for t in ("190", "1347"):  # Sentence 1: <text> Sentence 2: <text> (the answer is a class)
        out[t] = PromptStructure(Layout((_enum("enum1", "Sentence", 2),)),
                              Format({"enum1.separator": ": ", "enum1.item_space": " ", "enum1.wrapper": "x"},
                                     space=" \n "))
    out["1612"] = PromptStructure(  # sentence_A: <text> sentence_B: <text>
        Layout((_enum("sentences", "sentence", 2),)),
        Format({"sentences.separator": ": ", "sentences.option_separator": "_", "sentences.item_space": " ",
                "sentences.wrapper": "x", "sentences.numbering": "A"}, space=" \n "))
    # Title: <text> Sentence 1: <text> ... Sentence 4: <text> Choices: a. <text> b. <text>
    block, orig = _options_block("enum1", 2, ". ", " ", "x", "a", header="Choices")
    for t in ("213", "214"):
        out[t] = PromptStructure(
            Layout((Field("Title", "title"), _enum("enum0", "Sentence", 4, own_separator=False, own_casing=True),
                    block)),
            Format({**orig, "enum0.option_separator": " ", "enum0.item_space": " ", "enum0.wrapper": "x"},
                   space=" "), "enum1")
    # Sentence1: <text> ... Sentence5: <text> Choices: a. <text> b. <text>; the reference gives task220
    # no shared properties to vary (its global_constraints list is empty).
    block, orig = _options_block("enum1", 2, " ", " ", "x.", "a", header="Choices")
    out["220"] = PromptStructure(
        Layout((_enum("enum0", "Sentence", 5, own_separator=False), block), fixed=("separator", "casing")),
        Format({**orig, "enum0.item_space": " ", "enum0.wrapper": "x", "enum0.option_separator": " "}, space=" "),
        "enum1")
    for t in ("296", "297"):  # Sentence1: <text> ... SentenceN: <text> \n (A) <text> (B) <text>
        out[t] = PromptStructure(
            Layout((_enum("sentences", "Sentence", tuple(range(10, 0, -1))),
                    Group("options", (_enum("enum1", "", 2),)))),
            Format({"sentences.separator": ": ", "sentences.option_separator": "", "sentences.item_space": " ",
                    "sentences.wrapper": "x", "options.space": " ", "enum1.separator": " ", "enum1.item_space": " ",
                    "enum1.wrapper": "(x)", "enum1.numbering": "A"}, space=" \n "), "enum1")
    block, orig = _options_block("enum1", 3, " ", " ", "(x)", "A")
    for t in ("385", "580"):  # Context: <text> \n Question: <text> \n Options: (A) <text> (B) <text> (C) <text>
        out[t] = PromptStructure(Layout((Field("Context", "context"), Field("Question", "question"), block)),
                              Format(orig, space=" \n "), "enum1")
    # Fact1: <text>, Fact2: <text>, Question: <text> (A) <text> ... (H) <text>
    out["1297"] = PromptStructure(
        Layout((_enum("facts", "Fact", 2), Group("question_block", (Field("Question", "question"),
                                                                      _enum("enum1", "", 8))))),
        Format({"facts.separator": ": ", "facts.option_separator": "", "facts.item_space": ", ",
                "facts.wrapper": "x", "question_block.space": " ", "enum1.separator": " ", "enum1.item_space": " ",
                "enum1.wrapper": "(x)", "enum1.numbering": "A"}, space=", "), "enum1")
    for t in ("1419", "1420", "1421", "1423"):
        out[t] = _math_options("x )", " , ", " \n")
    out["1678"] = _math_options("x.", ", ", "\n")
    return out


# The reference's unformatted tasks: the raw input is the one field's text (not parsed)
SNI_DEFAULT = PromptStructure(Layout((Field("Input", "input"),), "Output"), Format.original())
SNI_STRUCTURES = _sni_structures()
SNI_INSTRUCTIONS = {
    '065': "In this task, you are given a short story consisting of exactly 5 sentences where the second sentence is missing. You are given two options and you need to select the one that best connects the first sentence with the rest of the story. Indicate your answer by 'Option {enum1_1}' if the first option is correct, otherwise 'Option {enum1_2}'. The incorrect option will change the subsequent storyline, so that at least one of the three subsequent sentences is no longer consistent with the story.",
    '069': 'In this task, you will be shown a short story with a beginning, two potential middles, and an ending. Your job is to choose the middle statement that makes the story coherent / plausible by writing "{enum1_1}" or "{enum1_2}" in the output. If both sentences are plausible, pick the one that makes most sense.',
    '070': 'In this task, you will be shown a short story with a beginning, two potential middles, and an ending. Your job is to choose the middle statement that makes the story incoherent / implausible by indicating "{enum1_1}" or "{enum1_2}" in the output. If both sentences are plausible, pick the one that makes less sense.',
    '213': "In this task, you're given the title of a five-sentence story, the first four sentences, and two options for the fifth sentence as {enum1_1} and {enum1_2}. Your job is to pick the sentence option that seamlessly connects with the rest of the story, indicating your choice as '{enum1_1}' or '{enum1_2}'. If both sentences are plausible, pick the one that makes more sense.",
    '214': "In this task, you're given the title of a five-sentence story, the first four sentences, and two options for the fifth sentence as {enum1_1} and {enum1_2}. Your job is to pick the sentence option that does not connect with the rest of the story, indicating your choice as '{enum1_1}' or '{enum1_2}'. If both sentences are plausible, pick the one that makes less sense.",
    '220': "In this task, you're given five sentences, numbered {enum0_1} through {enum0_5}, and two options {enum1_1} and {enum1_2} for possible titles for the story. Your job is to choose the title that better fits the story. Indicate your choice by '{enum1_1}' or '{enum1_2}'.",
    '296': "In this task, you're given four sentences of a story written in natural language. The given story is not complete and your job is to complete the story by selecting one of the sentence choices from ({enum1_1}) and ({enum1_2}), such that the story sounds fully coherent.",
    '297': "In this task, you're given four sentences of a story written in natural language. The given story is not complete and your job is to complete the story by selecting one of the sentence choices from ({enum1_1}) and ({enum1_2}), such that the story sounds fully coherent.",
    '385': "In this task, you're given a context passage, a question, and three answer options. Your task is to return an incorrect answer option to the question from the choices given. For all questions, only one of the three answer options is correct. Pick one of the two incorrect answer options as the output.",
    '580': "In this task, you're given a context, a question, and three options. Your task is to find the correct answer to the question using the given context and options. Also, you may need to use commonsense reasoning about social situations to answer the questions. Classify your answers into '{enum1_1}', '{enum1_2}', and '{enum1_3}'.",
    '1297': 'In this task, you are given two facts, and a multiple-choice question. Based on the given facts, answer the question with index of the correct option (e.g, "{enum1_1}").',
    '1419': "In this task, you need to answer the given multiple-choice question on the gain. Gain is the value by which to multiply the input. Classify your answers into '{enum1_1}', '{enum1_2}', '{enum1_3}', '{enum1_4}', and '{enum1_5}'.",
    '1420': "In this task, you need to answer the given multiple-choice question on the general math. Classify your answers into '{enum1_1}', '{enum1_2}', '{enum1_3}', '{enum1_4}', and '{enum1_5}'.",
    '1421': 'In this task, you need to provide the correct option for a given problem from the provided options.',
    '1423': "In this task, you need to answer the given multiple-choice question on geometry. Classify your answers into '{enum1_1}', '{enum1_2}', '{enum1_3}', '{enum1_4}', and '{enum1_5}'.",
    '1678': 'Given a math problem with context and a question and 5 answer choices, the task is to provide the correct answer choice based on the problem. You must choose one of the given answer choices by letter: {enum1_1}, {enum1_2}, {enum1_3}, {enum1_4}, and {enum1_5}; anything else is invalid.',
}


# --- generated tasks ----------------------------------------------------------------------------------

TASKS: Registry[Callable[[int, int], Task]] = Registry("classification task")

PRODUCTS = ("phone", "blender", "jacket", "novel", "laptop", "backpack", "coffee maker", "lamp", "headset",
            "chair", "tent", "camera")
POSITIVE = ("excellent", "wonderful", "reliable", "comfortable", "delightful", "sturdy", "fantastic", "great")
NEGATIVE = ("terrible", "awful", "flimsy", "useless", "disappointing", "broken", "horrible", "poor")
POS_END = ("I would buy it again.", "I recommend it to everyone.", "It made my week.", "Worth every penny.")
NEG_END = ("I returned it the next day.", "Avoid it.", "What a waste of money.", "I regret buying it.")


@TASKS.register("sentiment")
def sentiment_task(n: int = 200, seed: int = 0) -> Task:
    """Templated product reviews; the answer is "positive" or "negative"."""
    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        label = rng.choice(("positive", "negative"))
        adjs, ends = (POSITIVE, POS_END) if label == "positive" else (NEGATIVE, NEG_END)
        a, b = rng.sample(adjs, 2)
        text = f"The {rng.choice(PRODUCTS)} I ordered is {a} and {b}. {rng.choice(ends)}"
        examples.append(example({"review": text}, label))
    return classification_task("sentiment", "Classify the sentiment of the product review as positive or negative.",
                              PromptStructure(Layout((Field("Review", "review"),), "Sentiment")), examples,
                              ("negative", "positive"))


@TASKS.register("parity")
def parity_task(n: int = 200, seed: int = 0) -> Task:
    """Is a number even or odd?"""
    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        x = rng.randrange(10, 10_000)
        examples.append(example({"number": str(x)}, "even" if x % 2 == 0 else "odd"))
    return classification_task("parity", "Decide whether the number is even or odd.",
                              PromptStructure(Layout((Field("Number", "number"),), "Answer")), examples, ("even", "odd"))


@TASKS.register("comparison")
def comparison_task(n: int = 200, seed: int = 0) -> Task:
    """Two numbers in two fields; the answer names the larger one ("first" or "second")."""
    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        a, b = rng.sample(range(1, 1000), 2)
        examples.append(example({"first": str(a), "second": str(b)}, "first" if a > b else "second"))
    layout = Layout((Field("First number", "first"), Field("Second number", "second")), "Larger")
    return classification_task("comparison", "Which of the two numbers is larger? Answer first or second.",
                              PromptStructure(layout), examples, ("first", "second"))


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
def topic_task(n: int = 200, seed: int = 0) -> Task:
    """Multiple choice: the topic of a sentence among 4 shuffled options (answer = option number)."""
    rng = random.Random(seed)
    names = sorted(TOPICS)
    examples = []
    for _ in range(n):
        topic = rng.choice(names)
        opts = rng.sample(names, len(names))
        sentence = rng.choice(TOPICS[topic])
        examples.append(example({"sentence": sentence, "options": opts}, opts.index(topic)))
    layout = Layout((Field("Sentence", "sentence"), OPTIONS_BLOCK), "Answer")
    return classification_task("topic", "Choose the topic of the sentence from the options.",
                              PromptStructure(layout, OPTIONS_ORIGINAL), examples)


def load_classification_task(name: str, n: int = 200, seed: int = 0) -> Task:
    """A built-in task by name, or a file: ``.json`` (Super-NaturalInstructions) or ``.jsonl``."""
    path = Path(name)
    if path.suffix == ".json":
        return load_sni_task(path)
    if path.suffix == ".jsonl":
        return load_jsonl_task(path)
    if n < 1:
        raise LlmgenError(f"number of generated examples must be >= 1, got {n}")
    return TASKS.get(name)(n, seed)


def task_summary(task: Task) -> Mapping[str, object]:
    return {"name": task.name, "instruction": task.instruction, "layout": prompt_structure(task).layout.to_dict(),
            "classes": list(classes_of(task)), "num_options": num_options(task), "num_examples": len(task.docs)}


def classification_eval_task(name: str, n: int = 200, num_fewshot: int = 1) -> Task:
    """A FormatSpread classification task for ``llmgen eval``: the recipe's own ``Task``, split as the
    recipe splits it (the demonstration pool are the few-shot documents), ranked by loglikelihood."""
    task = load_classification_task(name, n=n + DEMO_POOL, seed=0)
    if name.endswith(".json"):  # an SNI file: every instance is evaluated, its Positive Examples are the demonstrations
        task.num_fewshot = min(num_fewshot, len(task.fewshot_docs))
        return task
    pool, examples = demo_pool_split(task.docs, seed=0)  # the FormatSpread recipe's split
    task.docs, task.fewshot_docs, task.num_fewshot = examples, pool, num_fewshot
    return task


def register_tasks(registry) -> None:
    """Called by ``llmgen.tasks`` when it loads the task families (see ``_load_plugin_tasks``)."""
    for name in ("sentiment", "parity", "comparison", "topic"):
        registry.register(name, lambda name=name: classification_eval_task(name))

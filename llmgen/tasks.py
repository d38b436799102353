"""Evaluation tasks: a registry of built-in tasks plus tasks read from YAML or JSONL files.

A task declares its prompt as *fields with descriptors* (``Question: ...``) and an output
descriptor (``Answer:``) rather than as one opaque template, so that the same task can be rendered
in any plausible format of the FormatSpread grammar (``llmgen eval --formats K``). A YAML task may
instead give a plain ``template`` string.

Prompt layout (as in FormatSpread): instruction, blank line, k demonstrations separated by blank
lines, blank line, the test input ending at the empty output field.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmgen.errors import LlmgenError
from llmgen.io import read_jsonl
from llmgen.registry import Registry

# A renderer turns (fields, output descriptor, output text) into the text of one example.
Renderer = Callable[[Sequence[tuple[str, str]], str, str], str]

GENERATE_METRICS = ("exact_match", "contains", "pass@k")
CHOICE_METRICS = ("acc",)


def default_renderer(fields: Sequence[tuple[str, str]], output_descriptor: str, output: str) -> str:
    """``Descriptor: text`` lines, then ``Output descriptor:`` (+ `` output`` for demonstrations)."""
    lines = [f"{d}: {t}" for d, t in fields]
    lines.append(f"{output_descriptor}: {output}" if output else f"{output_descriptor}:")
    return "\n".join(lines)


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def first_number(text: str) -> str:
    """The first number in a response (commas dropped, trailing ``.0`` removed), or ``""``."""
    m = _NUMBER.search(text)
    if not m:
        return ""
    s = m.group(0).replace(",", "")
    return s[:-2] if s.endswith(".0") else s


def strip_answer(text: str) -> str:
    return text.strip().rstrip(".").strip()


def math_answer(text: str) -> str:
    """A math answer (``\\boxed{}``, "final answer", last number), normalised (see math_answers)."""
    from llmgen.math_answers import canonical_math_answer, extract_answer

    return canonical_math_answer(extract_answer(text))


EXTRACTORS: dict[str, Callable[[str], str]] = {"first_number": first_number, "strip": strip_answer,
                                               "math": math_answer}


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
    output_type: str = "generate"  # or "multiple_choice"
    choices_key: str | None = None
    metrics: tuple[str, ...] = ("exact_match",)
    extract: str = "strip"
    stop: tuple[str, ...] = ("\n",)
    max_tokens: int = 32
    description: str = ""
    # A task whose metrics are not per-response scores (TOFU) brings its own evaluation:
    # evaluator(backend, task, config) -> (aggregate metrics, per-example rows).
    evaluator: Callable[..., tuple[dict[str, float], list[dict]]] | None = None

    def __post_init__(self) -> None:
        if not self.docs:
            raise LlmgenError(f"empty dataset: task {self.name!r} has no examples")
        if self.output_type not in ("generate", "multiple_choice"):
            raise LlmgenError(f"task {self.name!r}: output_type must be generate or multiple_choice")
        if self.output_type == "multiple_choice" and not self.choices_key:
            raise LlmgenError(f"task {self.name!r}: a multiple_choice task needs a choices field")
        if self.extract not in EXTRACTORS:
            raise LlmgenError(f"task {self.name!r}: unknown extract {self.extract!r} (known: {', '.join(EXTRACTORS)})")
        known = GENERATE_METRICS if self.output_type == "generate" else CHOICE_METRICS
        for m in self.metrics:
            if m not in known:
                raise LlmgenError(f"task {self.name!r}: unknown metric {m!r} for {self.output_type} (known: {', '.join(known)})")
        needed = [k for _, k in self.input_fields] if self.template is None else re.findall(r"{(\w+)}", self.template)
        needed = needed + [self.target_key] + ([self.choices_key] if self.choices_key else [])
        for i, doc in enumerate(self.docs):
            for k in needed:
                if k not in doc:
                    raise LlmgenError(f"task {self.name!r}: example {i} has no field {k!r}")
        if self.num_fewshot > len(self.fewshot_docs):
            raise LlmgenError(f"task {self.name!r}: {self.num_fewshot}-shot needs {self.num_fewshot} demonstrations, has {len(self.fewshot_docs)}")

    # --- rendering ------------------------------------------------------------------------------
    def fields_of(self, doc: dict) -> list[tuple[str, str]]:
        return [(d, str(doc[k])) for d, k in self.input_fields]

    def target_of(self, doc: dict) -> str:
        return str(doc[self.target_key])

    def render_example(self, doc: dict, with_answer: bool, renderer: Renderer | None = None) -> str:
        answer = self.target_of(doc) if with_answer else ""
        if self.template is not None:
            text = self.template.format(**doc)
            return f"{text} {answer}" if with_answer else text
        return (renderer or default_renderer)(self.fields_of(doc), self.output_descriptor, answer)

    def build_prompt(self, doc: dict, renderer: Renderer | None = None, num_fewshot: int | None = None) -> str:
        """Instruction, demonstrations in the same format, then the test input."""
        k = self.num_fewshot if num_fewshot is None else num_fewshot
        if k > len(self.fewshot_docs):
            raise LlmgenError(f"task {self.name!r}: {k}-shot needs {k} demonstrations, has {len(self.fewshot_docs)}")
        parts = [self.instruction] if self.instruction else []
        parts += [self.render_example(d, True, renderer) for d in self.fewshot_docs[:k]]
        parts.append(self.render_example(doc, False, renderer))
        return "\n\n".join(parts)

    def choices_of(self, doc: dict) -> list[str]:
        choices = doc[self.choices_key]  # type: ignore[index]
        if not isinstance(choices, list) or not choices:
            raise LlmgenError(f"task {self.name!r}: field {self.choices_key!r} must be a non-empty list")
        return [str(c) for c in choices]

    # --- scoring --------------------------------------------------------------------------------
    def is_correct(self, response: str, doc: dict) -> bool:
        if self.extract == "math":
            from llmgen.math_answers import grade

            return grade(response, self.target_of(doc))
        extract = EXTRACTORS[self.extract]
        target = extract(self.target_of(doc)) if self.extract == "first_number" else strip_answer(self.target_of(doc))
        if "contains" in self.metrics:
            return target.lower() in response.lower()
        return extract(response) == target

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "output_type": self.output_type, "metrics": list(self.metrics),
                "num_examples": len(self.docs), "num_fewshot": self.num_fewshot, "description": self.description}


TASKS: Registry[Callable[..., Task]] = Registry("task")


# --- built-in: arithmetic word problems --------------------------------------------------------

def make_arithmetic(n: int = 200, steps: int = 1, seed: int = 1234, num_fewshot: int = 3) -> Task:
    """The ``arithmetic`` eval tasks: ``n`` distinct problems of the one arithmetic generator."""
    from llmgen.math_tasks import arithmetic_problem

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


YAML_KEYS = {"name", "data", "template", "fields", "output", "target", "metric", "metrics", "choices", "stop",
             "max_tokens", "num_fewshot", "fewshot_data", "instruction", "extract", "description"}


def task_from_yaml(path: str | Path) -> Task:
    """A YAML task: data (JSONL, relative to the YAML), a template or fields, a target and metrics."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise LlmgenError(f"task file not found: {path}")
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise LlmgenError(f"malformed YAML in {path}: {str(e).splitlines()[0]}") from None
    if not isinstance(spec, dict):
        raise LlmgenError(f"malformed task file {path}: expected a mapping")
    unknown = sorted(set(spec) - YAML_KEYS)
    if unknown:
        raise LlmgenError(f"task file {path}: unknown key {unknown[0]!r} (known: {', '.join(sorted(YAML_KEYS))})")
    for key in ("data", "target"):
        if key not in spec:
            raise LlmgenError(f"task file {path}: missing key {key!r}")
    docs = read_jsonl(path.parent / spec["data"])
    fewshot = read_jsonl(path.parent / spec["fewshot_data"]) if "fewshot_data" in spec else []
    metrics = spec.get("metrics") or [spec.get("metric", "acc" if "choices" in spec else "exact_match")]
    fields = [(f["descriptor"], f["field"]) for f in spec.get("fields", [])] or [("Question", "question")]
    return Task(
        name=spec.get("name", path.stem), docs=docs, fewshot_docs=fewshot, num_fewshot=int(spec.get("num_fewshot", 0)),
        template=spec.get("template") if "fields" not in spec else None, input_fields=fields,
        output_descriptor=spec.get("output", "Answer"), target_key=spec["target"],
        instruction=spec.get("instruction", ""),
        output_type="multiple_choice" if "choices" in spec else "generate", choices_key=spec.get("choices"),
        metrics=tuple(metrics), extract=spec.get("extract", "strip"), stop=tuple(spec.get("stop", ["\n"])),
        max_tokens=int(spec.get("max_tokens", 32)), description=spec.get("description", f"YAML task {path}"),
    )


def get_task(name: str) -> Task:
    """A registered task name, a ``.yaml``/``.yml`` task file, or a ``.jsonl`` prompt file."""
    if name.endswith((".yaml", ".yml")):
        return task_from_yaml(name)
    if name.endswith(".jsonl"):
        return task_from_jsonl(name)
    _load_plugin_tasks()
    return TASKS.get(name)()


def classification_eval_task(name: str, n: int = 200, num_fewshot: int = 1) -> Task:
    """A FormatSpread classification task as an eval task: rank the classes by loglikelihood."""
    from llmgen.classification_tasks import DEMO_POOL, demo_pool_split, load_classification_task
    from llmgen.formats import Field

    ct = load_classification_task(name, n=n + DEMO_POOL, seed=0)
    if not all(isinstance(f, Field) for f in ct.layout.fields):
        raise LlmgenError(f"task {name!r} enumerates options; run it with `llmgen formatspread`")
    pool, examples = demo_pool_split(ct.examples, seed=0)  # the FormatSpread recipe's split
    to_doc = lambda ex: {**ex.values, "label": str(ex.label), "choices": list(ct.classes)}  # noqa: E731
    return Task(name=name, docs=[to_doc(e) for e in examples], fewshot_docs=[to_doc(e) for e in pool],
                num_fewshot=num_fewshot,
                input_fields=[(f.descriptor, f.key) for f in ct.layout.fields], output_descriptor=ct.layout.output,
                target_key="label", instruction=ct.instruction, output_type="multiple_choice", choices_key="choices",
                metrics=("acc",), description=f"generated classification ({', '.join(ct.classes)}), ranked by loglikelihood")


def math_eval_task(difficulty: int = 2, n: int = 200) -> Task:
    """The pass@N recipe's generated math problems (direct answers), graded by math equivalence.

    The documents are the test side of the one generated split (``math_tasks.generate_task``), the
    few-shot examples its train side; ``llmgen passn`` trains on the train side only."""
    from llmgen.math_tasks import generate_task

    train, test = generate_task(n_train=8, n_test=n, difficulty=difficulty, seed=0)
    to_doc = lambda p: {"problem": p.problem, "answer": p.answer}  # noqa: E731
    return Task(name=f"math_generated_d{difficulty}", docs=[to_doc(p) for p in test], fewshot_docs=[to_doc(p) for p in train],
                num_fewshot=3, input_fields=[("Problem", "problem")], output_descriptor="Answer", target_key="answer",
                metrics=("exact_match", "pass@k"), extract="math", stop=("\n",), max_tokens=16,
                description=f"generated multi-step arithmetic/algebra (difficulty {difficulty}), exact answers")


def tofu_data_source() -> str:
    """``$LLMGEN_TOFU_DATA`` (a TOFU folder or hub id), else the synthetic TOFU-format set, the
    same folder ``llmgen unlearn --data synthetic`` reads (``llmgen.tofu.synthetic_source``)."""
    import os

    from llmgen.tofu import synthetic_source

    return os.environ.get("LLMGEN_TOFU_DATA") or synthetic_source()


def tofu_eval_task(forget_split: str) -> Task:
    """TOFU's evaluation (probability, ROUGE-L, truth ratio, model utility; forget quality when
    ``$LLMGEN_TOFU_RETAIN_LOGS`` names a retain model's logs) as an eval task. The four sets are
    read once, here; ``$LLMGEN_TOFU_DS_SIZE`` (TOFU uses 300) keeps the first N rows of each,
    and ``--limit`` cuts further."""
    import os

    from llmgen.tofu import load_eval_sets

    source = tofu_data_source()
    ds_size = os.environ.get("LLMGEN_TOFU_DS_SIZE")
    if ds_size is not None and not ds_size.strip().isdigit():
        raise LlmgenError(f"LLMGEN_TOFU_DS_SIZE must be a positive integer, got {ds_size!r}")
    ds = int(ds_size) if ds_size else None
    sets = load_eval_sets(source, forget_split, ds)

    def evaluator(backend, task: Task, config) -> tuple[dict[str, float], list[dict]]:
        from llmgen.evals.tofu import MAX_NEW_TOKENS, tofu_eval

        out = tofu_eval(backend, sets, retain_logs=os.environ.get("LLMGEN_TOFU_RETAIN_LOGS"), limit=config.limit,
                        ds_size=ds, max_new_tokens=config.max_tokens or MAX_NEW_TOKENS)
        rows = []
        for split, res in out["result"].items():
            if not isinstance(res, dict) or "per_example" not in res:
                continue
            per = res["per_example"]
            for i in range(len(per["prob"])):
                rows.append({"task": task.name, "doc_id": f"{split}-{i}", "split": split,
                             "responses": [res["generations"][i]] if "generations" in res else [],
                             "metrics": {m: float(v[i]) for m, v in per.items()}})
        return out["summary"], rows

    return Task(name=f"tofu_{forget_split}", docs=sets["forget"], input_fields=[("Question", "question")],
                target_key="answer", evaluator=evaluator, metrics=(),
                description=f"TOFU evaluation, forget split {forget_split} (data: {source}; ds_size {ds})")


_PLUGINS_LOADED = False


def _load_plugin_tasks() -> None:
    """Register the recipes' tasks (imports are cheap: no torch at module level)."""
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True
    for name in ("sentiment", "parity", "comparison"):
        TASKS.register(name, lambda name=name: classification_eval_task(name))
    for d in (1, 2, 3):
        TASKS.register(f"math_generated_d{d}", lambda d=d: math_eval_task(d))
    for split in ("forget01", "forget05", "forget10"):
        TASKS.register(f"tofu_{split}", lambda split=split: tofu_eval_task(split))


def list_tasks() -> list[str]:
    _load_plugin_tasks()
    return list(TASKS)

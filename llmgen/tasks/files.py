"""Tasks defined by files: native YAML task files (see docs/tasks.md), JSONL prompt files, and the
catalogue of the papers' datasets (``catalogue/*.yaml``, hub or local data through ``tasks.hub``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmgen.errors import LlmgenError
from llmgen.io import read_jsonl
from llmgen.tasks.base import Task
from llmgen.tasks.hub import load_split
from llmgen.tasks.scoring import DEFAULT_METRICS

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
    import yaml  # optional at start-up: only task files need it

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

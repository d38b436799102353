"""lm-eval tasks through llmgen's backends (the ``lmeval`` extra: ``pip install 'llmgen[lmeval]'``).

``llmgen eval --tasks lmeval:NAME[,...] [--include-path DIR]`` loads lm-eval's own task definitions
(its catalogue and the user's YAMLs, with ``include``, ``!function`` and groups) and runs them with
lm-eval's own evaluator, so prompts, filters and metric code are lm-eval's. Only the model calls
differ: ``LlmgenLM`` answers lm-eval's requests (``generate_until`` / ``loglikelihood`` /
``loglikelihood_rolling``) through an llmgen backend (HF or vLLM) and llmgen's request cache, so a run
resumes, and the results come back in llmgen's schema (results.json + samples.jsonl, as ``run_eval``
writes them), so ``compare`` and ``report`` read them.

Tokenisation follows lm-eval's HF model (``HFLM``): ``tok_encode`` with the tokenizer's default special
tokens, lm-eval's ``_encode_pair`` and empty-context handling (TemplateLM), its left truncation to
``max_length`` and its rolling windows (``get_rolling_token_windows`` + ``make_disjoint_window``), so
the same model and dtype give the same numbers as ``lm_eval --model hf``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import TYPE_CHECKING, Any

from llmgen.errors import LlmgenError
from llmgen.prompts.formats import Field, Format, Layout
from llmgen.tasks import Task

if TYPE_CHECKING:
    from llmgen.backends import Backend
    from llmgen.cache import RequestCache
    from llmgen.evaluate import EvalConfig

PREFIX = "lmeval:"
INCLUDE_ENV = "LLMGEN_LMEVAL_INCLUDE_PATH"


def available() -> bool:
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        return False
    return True


def _require() -> None:
    if not available():
        raise LlmgenError("lm-eval tasks need the lmeval extra: pip install 'llmgen[lmeval]' (lm-eval==0.4.13)")


def include_path() -> list[str] | None:
    """The user's lm-eval task folders (``--include-path``, kept in ``$LLMGEN_LMEVAL_INCLUDE_PATH``)."""
    value = os.environ.get(INCLUDE_ENV)
    if not value:
        return None
    paths = [p for p in value.split(os.pathsep) if p]
    for p in paths:
        if not os.path.isdir(p):
            raise LlmgenError(f"--include-path {p!r} is not a folder")
    return paths


_MANAGERS: dict[tuple, Any] = {}


def task_manager():
    """lm-eval's TaskManager over its catalogue plus the include path (built once per process)."""
    _require()
    import logging

    from lm_eval.tasks import TaskManager

    key = tuple(include_path() or ())
    if key not in _MANAGERS:
        logging.getLogger("lm_eval").setLevel(logging.WARNING)
        _MANAGERS[key] = TaskManager(include_path=list(key) or None)
    return _MANAGERS[key]


def list_lmeval_tasks(pattern: str | None = None) -> list[str]:
    """lm-eval task and group names (``lmeval:`` prefixed) containing ``pattern``."""
    names = task_manager().all_tasks
    return [PREFIX + n for n in names if pattern is None or pattern.lower() in n.lower()]


def load_lmeval_task(name: str) -> Task:
    """An llmgen Task standing for an lm-eval task or group; the definition is loaded (and its data
    read) here, so an unknown name or a broken YAML fails before any model loads."""
    from llmgen.tasks import Task

    lm_name = name[len(PREFIX):]
    tm = task_manager()
    if lm_name not in tm.all_tasks:
        close = [n for n in tm.all_tasks if lm_name.lower() in n.lower()][:8]
        raise LlmgenError(f"unknown lm-eval task {lm_name!r}" + (f" (close: {', '.join(close)})" if close else
                          " (see `llmgen tasks --filter NAME`; your own YAMLs need --include-path)"))
    try:
        leaves = list(tm.load([lm_name])["tasks"].values())
        docs = [{"task": t.config.task, "doc_id": i} for t in leaves for i in range(len(t.eval_docs))]
    except LlmgenError:
        raise
    except Exception as e:
        raise LlmgenError(f"lm-eval task {lm_name!r} does not load: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    types = sorted({t.OUTPUT_TYPE for t in leaves})
    # lm-eval renders its own prompts (Jinja doc_to_text), so --formats cannot vary them: the template
    # marks the task as not fields-with-descriptors, which --formats refuses in one line before loading
    text = leaves[0].config.doc_to_text if len(leaves) == 1 else None
    template = text if isinstance(text, str) else "<lm-eval doc_to_text>"
    return Task(name=name, docs=docs, output_type="lmeval", metrics=(), target_key="doc_id", template=template,
                description=f"lm-eval {'group' if len(leaves) > 1 else 'task'} {lm_name} ({', '.join(types)})")


def _lm_class():
    """``LlmgenLM``, defined on first use so that importing llmgen never needs lm-eval."""
    from lm_eval.api.model import TemplateLM
    from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    from llmgen.backends import SamplingConfig
    from llmgen.backends.base import prefix_token_id
    from llmgen.backends.cached import CachedBackend

    class LlmgenLM(TemplateLM):
        """An lm-eval model whose requests are answered by an llmgen backend through the request cache."""

        def __init__(self, backend: Backend, cache: RequestCache, seed: int = 0, chunk: int | None = None) -> None:
            super().__init__()
            self.backend, self.seed = backend, seed
            self.cached = CachedBackend(backend, cache, batch_size=min(chunk, backend.batch_size) if chunk else None)
            self.tokenizer = backend.tokenizer

        @property
        def eot_token_id(self) -> int:
            return self.tokenizer.eos_token_id

        @property
        def prefix_token_id(self) -> int:
            return prefix_token_id(self.tokenizer)

        @property
        def max_length(self) -> int:
            return self.backend.max_length

        @property
        def tokenizer_name(self) -> str:
            return str(self.backend.model_path).replace("/", "__")

        def chat_template(self, chat_template: bool | str = False) -> str | None:
            return getattr(self.tokenizer, "chat_template", None) if chat_template else None

        def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
            return self.tokenizer.apply_chat_template(chat_history, tokenize=False,
                                                      add_generation_prompt=add_generation_prompt)

        def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
            # HFLM.tok_encode with add_bos_token unset: the tokenizer's default, unless the text
            # already starts with the prefix token
            kw = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
            if add_special_tokens is None and string.startswith(self.tokenizer.decode(self.prefix_token_id)):
                kw = {"add_special_tokens": False}
            return self.tokenizer.encode(string, **kw)

        def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
            # HFLM keeps the last max_length + 1 tokens of context + continuation
            n = self.max_length + 1
            pairs = []
            for _, ctx, cont in requests:
                whole = (list(ctx) + list(cont))[-n:]
                pairs.append((whole[: len(whole) - len(cont)], list(cont)))
            out = [(r.logprob, r.is_greedy) for r in self.cached.loglikelihood_tokens(pairs)]
            for (args, _, _), (lp, greedy) in zip(requests, out, strict=True):
                if args is not None:
                    self.cache_hook.add_partial("loglikelihood", args, (lp, greedy))
            return [(float(lp), bool(greedy)) for lp, greedy in out]

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
            # lm-eval's own windows (HFLM: max_seq_len = max_length, one token of context)
            windows, counts = [], []
            for (text,) in (r.args for r in requests):
                w = [make_disjoint_window(x) for x in get_rolling_token_windows(
                    token_list=self.tok_encode(text), prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length, context_len=1)]
                windows += [(None, c, x) for c, x in w]
                counts.append(len(w))
            scores = self._loglikelihood_tokens(windows)
            out, start = [], 0
            for c in counts:
                out.append(sum(lp for lp, _ in scores[start : start + c]))
                start += c
            return out

        def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
            eos = self.tokenizer.decode(self.eot_token_id, skip_special_tokens=False)
            contexts, settings = [], []
            for context, gen_kwargs in (r.args for r in requests):
                kwargs = normalize_gen_kwargs(dict(gen_kwargs), 256)  # HFLM's max_gen_toks default
                until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
                settings.append(SamplingConfig(n=1, temperature=float(kwargs.get("temperature") or 0.0),
                                               top_p=float(kwargs.get("top_p") or 1.0),
                                               max_tokens=int(kwargs["max_gen_toks"]), stop=tuple(until), seed=self.seed))
                contexts.append(context)
            # the backend left-truncates a context to max_length - max_gen_toks tokens, as HFLM does
            out = [comps[0].text for comps in self.cached.generate(contexts, settings)]
            for r, text in zip(requests, out, strict=True):
                self.cache_hook.add_partial("generate_until", r.args, text)
            return out

    return LlmgenLM


def make_lm(backend: Backend, cache: RequestCache, seed: int = 0, chunk: int | None = None):
    """An ``lm_eval.api.model.LM`` over an llmgen backend (for lm-eval's ``simple_evaluate``)."""
    _require()
    return _lm_class()(backend, cache, seed=seed, chunk=chunk)


def metric_name(key: str) -> str | None:
    """lm-eval's ``"acc,none"`` → ``"acc"``; ``"exact_match,get-last"`` → ``"exact_match/get-last"``;
    None for stderr entries and aliases."""
    if "," not in key:
        return None
    metric, filt = key.split(",", 1)
    if metric.endswith("_stderr"):
        return None
    return metric if filt == "none" else f"{metric}/{filt}"


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int | float):
        return float(v)
    return None


def convert_samples(task: str, samples: Sequence[dict]) -> list[dict]:
    """lm-eval's logged samples (one per document and filter) → llmgen rows (one per document)."""
    rows: dict[int, dict] = {}
    for s in samples:
        filt = s.get("filter", "none")
        row = rows.setdefault(s["doc_id"], {
            "task": task, "doc_id": s["doc_id"], "prompt": s["arguments"][0][0] if s.get("arguments") else "",
            "target": str(s.get("target", "")), "responses": [r for resp in s.get("resps", []) for r in resp],
            "filtered": {}, "metrics": {}})
        row["filtered"][filt] = s.get("filtered_resps")
        for m in s.get("metrics", []):
            v = _number(s.get(m))
            if v is not None:
                row["metrics"][m if filt == "none" else f"{m}/{filt}"] = v
            elif isinstance(s.get(m), list | tuple):  # (loglikelihood, count) of perplexity metrics
                row.setdefault("items", {})[m] = list(s[m])
    return [rows[k] for k in sorted(rows)]


def convert_results(lm_name: str, res: dict) -> dict[str, float]:
    """lm-eval's results of a task or group → llmgen's flat ``{metric: value}`` (subtasks of a group
    as ``subtask.metric``)."""
    out: dict[str, float] = {}
    for task, metrics in res["results"].items():
        for key, v in metrics.items():
            name, value = metric_name(key), _number(v)
            if name is None or value is None:
                continue
            out[name if task == lm_name else f"{task}.{name}"] = value
    return out


def run_lmeval(lm, names: list[str], config: EvalConfig | None = None, *, limit: int | None = None,
               num_fewshot: int | None = None, apply_chat_template: bool = False, seed: int = 0) -> dict:
    """lm-eval's ``simple_evaluate`` on ``names`` with the catalogue + include path (any LM)."""
    from lm_eval import evaluator

    if config is not None:
        limit, num_fewshot, apply_chat_template, seed = (config.limit, config.num_fewshot,
                                                         config.apply_chat_template, config.seed)
    return evaluator.simple_evaluate(
        model=lm, tasks=names, num_fewshot=num_fewshot, limit=limit, log_samples=True, bootstrap_iters=0,
        task_manager=task_manager(), apply_chat_template=apply_chat_template,
        fewshot_as_multiturn=bool(apply_chat_template), random_seed=seed, numpy_random_seed=seed,
        torch_random_seed=seed, fewshot_random_seed=seed, verbosity="WARNING")


def evaluate_lmeval_task(backend: Backend, task: Task, config: EvalConfig, cache: RequestCache) -> tuple[dict[str, float], list[dict]]:
    """Run one ``lmeval:NAME`` task with lm-eval's evaluator over ``backend``; llmgen's (metrics, rows)."""
    lm_name = task.name[len(PREFIX):]
    res = run_lmeval(make_lm(backend, cache, seed=config.seed, chunk=max(64, config.batch_size * 4)), [lm_name], config)
    rows = []
    for sub, samples in sorted(res.get("samples", {}).items()):
        rows += convert_samples(task.name if sub == lm_name else f"{task.name}.{sub}", samples)
    return convert_results(lm_name, res), rows


# --- format spread on lm-eval tasks (``llmgen eval --tasks lmeval:NAME --formats K``) -----------------

_FIELD = re.compile(r"\{\{\s*([A-Za-z_]\w*)\s*\}\}")
_DESCRIBED = re.compile(r"(?P<space>\s*)(?P<desc>[^\s{}:][^{}\n:]*?)(?P<sep>[ \t]*:[ \t]*)")


def template_layout(text: str) -> tuple[Layout, Format]:
    """The field layout and original format of a ``doc_to_text`` made of ``Descriptor: {{field}}`` parts
    joined by one whitespace run and ending at the open output field (``...\\nAnswer:``).

    Every field must use the same separator and the same spacing, since a Format has one of each; the
    output field's separator is the fields' without its trailing whitespace (that whitespace is what
    the continuation starts with). Raises ``LlmgenError`` saying why a template cannot be varied.
    """
    if "{%" in text or "{#" in text:
        raise LlmgenError("its doc_to_text uses Jinja control flow ({% ... %})")
    parts = _FIELD.split(text)
    segments, keys = parts[0::2], parts[1::2]
    if any("{{" in s or "}}" in s for s in segments):
        raise LlmgenError("its doc_to_text has Jinja expressions other than {{field}}")
    if not keys:
        raise LlmgenError("its doc_to_text has no 'Descriptor: {{field}}' line")
    fields, seps, spaces = [], set(), set()
    for i, (segment, key) in enumerate(zip(segments, keys, strict=False)):
        m = _DESCRIBED.fullmatch(segment)
        if m is None or (i > 0 and not m["space"]) or (i == 0 and m["space"]):
            raise LlmgenError(f"its doc_to_text part {segment + '{{' + key + '}}'!r} is not 'Descriptor: {{{{field}}}}'")
        fields.append(Field(m["desc"], key))
        seps.add(m["sep"])
        if i:
            spaces.add(m["space"])
    out = _DESCRIBED.fullmatch(segments[-1])
    if out is None or not out["space"]:
        raise LlmgenError(f"its doc_to_text does not end at an output field ('\\nAnswer:'), it ends {segments[-1]!r}")
    spaces.add(out["space"])
    if len(seps) > 1 or len(spaces) > 1:
        raise LlmgenError("its fields mix separators or spacings (a format has one of each)")
    sep, space = seps.pop(), spaces.pop()
    if out["sep"] != sep.rstrip():
        raise LlmgenError(f"its output field {out['desc'] + out['sep']!r} does not use the fields' separator {sep!r}")
    return Layout(fields=tuple(fields), output=out["desc"]), Format(separator=sep, space=space)


def _fields_doc(leaf: Any, doc: dict, keys: Sequence[str]) -> dict[str, Any]:
    """One lm-eval document as llmgen fields: each ``{{key}}`` rendered by lm-eval's own Jinja
    environment, its choices (``doc_to_choice``) and its gold (``doc_to_target``: index or text)."""
    from lm_eval.utils import apply_template

    return {**{k: apply_template("{{" + k + "}}", doc) for k in keys},
            "choices": [str(x) for x in leaf.doc_to_choice(doc)], "label": leaf.doc_to_target(doc)}


def _lmeval_demos(leaf: Any, docs: Sequence[dict], k: int, seed: int) -> list[list[dict]]:
    """The k demonstrations lm-eval's seeded sampler gives each document, drawn in lm-eval's order
    (documents in turn, from ``set_fewshot_seed(seed)``, as ``simple_evaluate`` seeds it)."""
    if not k:
        return [[] for _ in docs]
    if not hasattr(leaf, "sampler"):
        raise LlmgenError(f"--formats cannot vary lm-eval task {leaf.config.task!r}: it has no few-shot split")
    leaf.set_fewshot_seed(seed)
    same = leaf.fewshot_cfg.split == leaf.config.test_split
    return [list(leaf.sampler.sample(n=k, eval_doc=doc if same else None)) for doc in docs]


@dataclass
class LmevalFieldsTask(Task):
    """An lm-eval task as fields, whose demonstrations are fixed per document (lm-eval's sampler drew them)."""

    demos: list[list[dict]] = dc_field(default_factory=list)

    def demonstrations(self, doc: dict, k: int, doc_id: int = 0) -> list[dict]:
        return self.demos[doc_id][:k] if k else []


def format_task(task: Task, config: EvalConfig) -> tuple[Task, Format]:
    """The ``lmeval:NAME`` task as an llmgen Task declared as fields (for ``--formats``), with its original format.

    Only a single ``multiple_choice`` task without a chat template is converted; few-shot
    demonstrations are the ones lm-eval's seeded sampler draws for each document. Format 0 is checked
    here, document by document, to give exactly lm-eval's (context, continuation) pairs, so a template
    this cannot reproduce is refused in one line before any model loads.
    """
    from llmgen.prompts.format_eval import choice_pairs, format_renderer

    lm_name = task.name[len(PREFIX):]
    why = f"--formats cannot vary lm-eval task {lm_name!r}: "
    leaves = list(task_manager().load([lm_name])["tasks"].values())
    if len(leaves) != 1:
        raise LlmgenError(why + "it is a group (give its tasks one by one)")
    leaf = leaves[0]
    c = leaf.config
    if not isinstance(c.doc_to_text, str):
        raise LlmgenError(why + "its doc_to_text is a Python function")
    if leaf.OUTPUT_TYPE != "multiple_choice":
        raise LlmgenError(why + f"it is {leaf.OUTPUT_TYPE} (only multiple_choice lm-eval tasks are converted)")
    if config.apply_chat_template:
        raise LlmgenError(why + "--apply-chat-template is not supported for lm-eval tasks with --formats")
    k = config.num_fewshot if config.num_fewshot is not None else c.num_fewshot or 0
    if c.gen_prefix or getattr(leaf, "multiple_input", False):
        raise LlmgenError(why + "it has a gen_prefix or multiple inputs")
    description = c.description or ""
    if "{{" in description or "{%" in description:
        raise LlmgenError(why + "its description is a per-document template")
    try:
        layout, original = template_layout(c.doc_to_text)
    except LlmgenError as e:
        raise LlmgenError(why + str(e)) from None
    keys = [f.key for f in layout.fields]
    lm_docs = list(leaf.eval_docs)[: config.limit] if config.limit else list(leaf.eval_docs)
    docs = [_fields_doc(leaf, doc, keys) for doc in lm_docs]
    demos = [[_fields_doc(leaf, d, keys) for d in ds] for ds in _lmeval_demos(leaf, lm_docs, k, config.seed)]
    native = LmevalFieldsTask(name=task.name, docs=docs, demos=demos, num_fewshot=k,
                  fewshot_docs=[d for ds in demos for d in ds], input_fields=[(f.descriptor, f.key) for f in layout.fields],
                  output_descriptor=layout.output, target_key="label", instruction=description.removesuffix("\n\n"),
                  output_type="multiple_choice", choices_key="choices", choice_prefix=c.target_delimiter,
                  metrics=("acc", "acc_norm"), description=f"lm-eval task {lm_name} as fields")
    render = format_renderer(original, native)
    if k:
        leaf.set_fewshot_seed(config.seed)  # the same draws again, now as lm-eval's own contexts
    for i, (doc, ours) in enumerate(zip(lm_docs, docs, strict=True)):
        context = leaf.fewshot_context(doc, k)
        expected = [(context, f"{c.target_delimiter}{x}") for x in ours["choices"]]
        if choice_pairs(native.build_prompt(ours, render, k, i), ours["choices"]) != expected:
            raise LlmgenError(why + f"its original format does not reproduce lm-eval's prompt of document {i}: "
                              f"{expected[0][0][-60:]!r} + {expected[0][1]!r}")
    return native, original

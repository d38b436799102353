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

import logging
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, replace
from dataclasses import field as dc_field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmgen.errors import LlmgenError
from llmgen.eval_config import request_chunk
from llmgen.prompts.formats import Field, Format, Layout, walk
from llmgen.prompts.render import (
    PromptStructure,
    answers_in,
    choice_pairs,
    generation_prompt,
    inputs_in,
    prompt_in,
    prompt_structure,
)
from llmgen.prompts.structure import (
    Slot,
    Structure,
    aligned_structure,
    jinja_skeleton,
    slot_values,
    structure_of,
)
from llmgen.tasks.base import Task
from llmgen.tasks.scoring import Scored, choice_prediction

if TYPE_CHECKING:
    from llmgen.backends import Backend
    from llmgen.cache import RequestCache
    from llmgen.eval_config import EvalConfig

PREFIX = "lmeval:"
INCLUDE_ENV = "LLMGEN_LMEVAL_INCLUDE_PATH"
# lm-eval 0.4.13's seeds when its CLI is run without --seed ("0,1234,1234,1234": ``lm_eval.defaults``
# DEFAULT_RANDOM_SEED, DEFAULT_OTHER_SEED). An ``lmeval:`` run at llmgen's defaults uses exactly
# these, so it draws lm-eval's few-shot demonstrations and gives lm-eval's prompts and numbers.
# ``--seed`` (llmgen's sampling and bootstrap seed, default 0) is lm-eval's python ``random`` seed;
# ``--fewshot-seed`` (default 1234) is its few-shot sampler's; numpy and torch stay at 1234.
LMEVAL_NUMPY_SEED = 1234
LMEVAL_TORCH_SEED = 1234


def lmeval_seeds(seed: int = 0, fewshot_seed: int = 1234) -> dict[str, int]:
    """The four seeds handed to lm-eval's ``simple_evaluate`` (recorded in results.json ``tasks``)."""
    return {"random_seed": seed, "numpy_random_seed": LMEVAL_NUMPY_SEED, "torch_random_seed": LMEVAL_TORCH_SEED,
            "fewshot_random_seed": fewshot_seed}


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
CATALOGUE_INDEX_VERSION = 1  # bump when the stored form of the catalogue index changes


def _catalogue_index(store: bool = True) -> dict[str, Any]:
    """lm-eval's index of its own catalogue (``TaskIndex.build`` over ``lm_eval/tasks``: name → Entry),
    read from llmgen's cache when the catalogue's files are the ones it was built from.

    Building it parses ~14,000 YAML files: 5-8 s on a quiet 2-core machine, most of a short run's
    fixed cost, paid by every ``lmeval:`` run and ``llmgen tasks``. The key is the lm-eval version and
    every YAML file's path, size and mtime (one ``os.walk``, well under a second), so an upgraded or
    edited catalogue is indexed again (``store=False``: read, never written, for listing commands,
    which leave the cache as they found it). Stored as JSON (name, kind, file, tags; no code to run on
    reading): an entry with a file is built from that file by lm-eval's factory, its parsed config
    is not needed, so it is not kept; an entry without one (a tag) keeps its config.
    """
    import hashlib
    import json
    from importlib.metadata import version

    import lm_eval.tasks
    from lm_eval.tasks._index import Entry, Kind, TaskIndex

    from llmgen.io import atomic_write_text
    from llmgen.models import cache_dir

    root = Path(lm_eval.tasks.__file__).parent
    h = hashlib.sha256(f"{CATALOGUE_INDEX_VERSION}:{version('lm_eval')}:{root}".encode())
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for f in sorted(files):
            if f.endswith(".yaml"):
                st = os.stat(os.path.join(folder, f))
                h.update(f"{folder}/{f}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    stored = cache_dir() / "lmeval" / f"catalogue-index-{h.hexdigest()[:20]}.json"
    try:
        rows = json.loads(stored.read_text())
        return {k: Entry(name=n, kind=Kind[kind], yaml_path=Path(p) if p else None, cfg=cfg, tags=set(tags))
                for k, n, kind, p, tags, cfg in rows}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    index = TaskIndex.build([root])
    if not store:
        return index
    try:
        atomic_write_text(stored, json.dumps([[k, e.name, e.kind.name, str(e.yaml_path) if e.yaml_path else None,
                                               sorted(e.tags), None if e.yaml_path else e.cfg]
                                              for k, e in index.items()]))
    except (OSError, TypeError, ValueError):
        pass  # an unwritable cache or an entry JSON cannot hold: index again next time
    return index


def _manager(include: list[str], store: bool = True):
    """``TaskManager(include_path=include)``, the catalogue's part of its index from
    ``_catalogue_index``: the same index (defaults first, then the include folders, which override
    with lm-eval's warning), built in a fraction of the time."""
    from collections import defaultdict
    from itertools import chain

    from lm_eval.tasks import TaskManager
    from lm_eval.tasks._index import Kind

    tm = TaskManager(include_path=include or None, include_defaults=False)  # indexes the include folders
    index = dict(_catalogue_index(store))
    for name, entry in tm._index.items():  # TaskIndex.build's merge of a later path
        if name in index:
            logging.getLogger("lm_eval.tasks._index").warning(
                "Task '%s' from %s overrides existing task from %s", name, entry.yaml_path, index[name].yaml_path)
        index[name] = entry
    buckets = defaultdict(list)
    for k, e in index.items():
        buckets[e.kind].append(k)
    # TaskManager.__init__'s fields, from the merged index
    tm._index = index
    tm._all_tasks = sorted(index)
    tm._all_subtasks = sorted(chain.from_iterable(buckets[k] for k in {Kind.TASK, Kind.PY_TASK}))
    tm._all_groups = sorted(buckets[Kind.GROUP])
    tm._all_tags = sorted(buckets[Kind.TAG])
    return tm


def task_manager(store: bool = True):
    """lm-eval's TaskManager over its catalogue plus the include path (built once per process, its
    catalogue index read from llmgen's cache: ``_catalogue_index``; ``store=False``: not written there)."""
    _require()
    key = tuple(include_path() or ())
    if key not in _MANAGERS:
        logging.getLogger("lm_eval").setLevel(logging.WARNING)
        _MANAGERS[key] = _manager(list(key), store)
    return _MANAGERS[key]


def local_task_yaml(task: str, catalogue_yaml: str | os.PathLike, data_files: dict[str, str], extra: str = "") -> str:
    """The text of a task YAML that is lm-eval's own ``catalogue_yaml`` (included as is: prompt,
    choices, metrics, few-shot settings) under the name ``task``, reading its splits from local files
    in the hub schema (``{split: path}``); ``extra`` adds YAML lines (``num_fewshot: 2``)."""
    import json

    return (f"include: {os.fspath(catalogue_yaml)}\ntask: {task}\ndataset_path: json\ndataset_name: null\n"
            f"dataset_kwargs:\n  data_files: {json.dumps(data_files)}\n{extra}")


def list_lmeval_tasks(pattern: str | None = None) -> list[str]:
    """lm-eval task and group names (``lmeval:`` prefixed) containing ``pattern``."""
    names = task_manager(store=False).all_tasks  # a listing writes nothing
    return [PREFIX + n for n in names if pattern is None or pattern.lower() in n.lower()]


def load_lmeval_task(name: str) -> Task:
    """An llmgen Task standing for an lm-eval task or group; the definition is loaded (and its data
    read) here, so an unknown name or a broken YAML fails before any model loads."""
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
    # lm-eval renders its own prompts: a plain run keeps them as lm-eval's; --formats converts the task
    # first (format_task reads its prompt structure), so the template here only describes it
    text = leaves[0].config.doc_to_text if len(leaves) == 1 else None
    template = text if isinstance(text, str) else "<lm-eval doc_to_text>"
    return LmevalTask(name=name, docs=docs, output_type="lmeval", metrics=(), target_key="doc_id", template=template,
                      description=f"lm-eval {'group' if len(leaves) > 1 else 'task'} {lm_name} ({', '.join(types)})",
                      leaves=leaves)


@dataclass
class LmevalTask(Task):
    """An ``lmeval:NAME`` task; ``seeds`` are the ones lm-eval ran it with (set by the run, in results.json).

    ``leaves`` are lm-eval's task objects, loaded once (``load_lmeval_task``) and reused by the checks
    and the ``--formats`` conversion of the same process."""

    seeds: dict[str, int] = dc_field(default_factory=dict)
    leaves: list = dc_field(default_factory=list, repr=False)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **({"seeds": dict(self.seeds)} if self.seeds else {})}


def check_fewshot(tasks: Sequence[Task], k: int) -> None:
    """``--num-fewshot k`` against each lm-eval task's pool of demonstrations (its few-shot split,
    less the document itself when that is the evaluated split): lm-eval itself finds out only when
    it builds the first context, after the model loaded. Reads the tasks' loaded leaves."""
    for task in tasks:
        for leaf in task.leaves if isinstance(task, LmevalTask) else ():
            if not hasattr(leaf, "fewshot_docs"):
                continue
            docs = leaf.fewshot_docs()
            pool = len(docs) if docs is not None else 0
            if docs is not None and leaf.fewshot_cfg.split == leaf.config.test_split:
                pool -= 1  # a document is never its own demonstration
            if k > pool:
                raise LlmgenError(f"--num-fewshot {k}: lm-eval task {leaf.config.task!r} has {max(pool, 0)} "
                                  "demonstrations to draw from")


def generation_settings(gen_kwargs: dict, tokenizer: Any, seed: int = 0):
    """A task's ``generation_kwargs`` as HFLM reads them (``normalize_gen_kwargs`` with HFLM's default
    of 256 new tokens, the EOS text added to ``until``), as one llmgen ``SamplingConfig``: the one
    reading for ``lmeval:`` runs and ``--formats`` on them, so both send the backend the same request
    (format 0; another format adds its own spelling of the stops that spell a descriptor:
    ``llmgen.prompts.formats.format_stops``)."""
    from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs

    from llmgen.backends import SamplingConfig

    eos = tokenizer.decode(tokenizer.eos_token_id, skip_special_tokens=False)
    kwargs = normalize_gen_kwargs(dict(gen_kwargs), 256)
    until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
    return SamplingConfig(n=1, temperature=float(kwargs.get("temperature") or 0.0), top_p=float(kwargs.get("top_p") or 1.0),
                          max_tokens=int(kwargs["max_gen_toks"]), stop=tuple(until), seed=seed)


def _lm_class():
    """``LlmgenLM``, defined on first use so that importing llmgen never needs lm-eval."""
    from lm_eval.api.model import TemplateLM
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

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

        def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
            # lm-eval's bar here times the tokenising only (scoring is _loglikelihood_tokens): noise
            return super().loglikelihood(requests, disable_tqdm=True)

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
            contexts, settings = [], []
            for context, gen_kwargs in (r.args for r in requests):
                settings.append(generation_settings(gen_kwargs, self.tokenizer, self.seed))
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


def quiet_git_hash() -> str | None:
    """lm-eval's ``get_git_commit_hash`` (the working folder's ``git describe --always``, stored in
    its results) with git's stderr captured: lm-eval's runs git with the user's terminal as stderr,
    so every run outside a git checkout printed "fatal: not a git repository"."""
    try:
        proc = subprocess.run(["git", "describe", "--always"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def run_lmeval(lm, names: list[str], config: EvalConfig | None = None, *, limit: int | None = None,
               num_fewshot: int | None = None, apply_chat_template: bool = False, seed: int = 0,
               fewshot_seed: int = 1234) -> dict:
    """lm-eval's ``simple_evaluate`` on ``names`` with the catalogue + include path (any LM), seeded
    as :func:`lmeval_seeds` says (at the defaults: lm-eval's CLI defaults)."""
    from lm_eval import evaluator

    evaluator.get_git_commit_hash = quiet_git_hash  # lm-eval's own lets git print to the terminal
    if config is not None:
        limit, num_fewshot, apply_chat_template, seed, fewshot_seed = (
            config.limit, config.num_fewshot, config.apply_chat_template, config.seed, config.fewshot_seed)
    # lm-eval's add_env_info runs torch's collect_env (pip, nvidia-smi, lscpu: 1-3 s of subprocesses)
    # for results["pretty_env_info"], which llmgen does not keep (results.json records its own versions)
    add_env_info, evaluator.add_env_info = evaluator.add_env_info, _no_env_info
    try:
        return evaluator.simple_evaluate(
            model=lm, tasks=names, num_fewshot=num_fewshot, limit=limit, log_samples=True, bootstrap_iters=0,
            task_manager=task_manager(), apply_chat_template=apply_chat_template,
            fewshot_as_multiturn=bool(apply_chat_template), verbosity="WARNING", **lmeval_seeds(seed, fewshot_seed))
    finally:
        evaluator.add_env_info = add_env_info


def _no_env_info(storage: dict) -> None:
    """Stands for lm-eval's ``add_env_info`` inside ``run_lmeval``: nothing llmgen reads."""


def evaluate_lmeval_task(backend: Backend, task: Task, config: EvalConfig, cache: RequestCache) -> tuple[dict[str, float], list[dict]]:
    """Run one ``lmeval:NAME`` task with lm-eval's evaluator over ``backend``; llmgen's (metrics, rows)."""
    lm_name = task.name[len(PREFIX):]
    res = run_lmeval(make_lm(backend, cache, seed=config.seed, chunk=request_chunk(config)), [lm_name], config)
    if isinstance(task, LmevalTask):
        task.seeds = lmeval_seeds(config.seed, config.fewshot_seed)
    rows = []
    for sub, samples in sorted(res.get("samples", {}).items()):
        rows += convert_samples(task.name if sub == lm_name else f"{task.name}.{sub}", samples)
    return convert_results(lm_name, res), rows


# --- format spread on lm-eval tasks (``llmgen eval --tasks lmeval:NAME --formats K``) -----------------
# The prompt structure is read from the task's own prompts (``llmgen.prompts.structure``): from its
# Jinja template when it has no control flow, else by aligning each document's values with the text
# lm-eval renders (Python ``doc_to_text``, ``{% set %}`` preambles).


def template_layout(text: str, target_delimiter: str = " ") -> tuple[Layout, Format]:
    """The layout and original format of a Jinja ``doc_to_text`` without control flow (see
    ``llmgen.prompts.structure``); raises ``LlmgenError`` saying why a template cannot be varied."""
    st = structure_of(jinja_skeleton(text), target_delimiter)
    return st.layout, st.original


def _jinja(expr: str, doc: dict) -> str:
    """One ``{{ expression }}`` of a template on one document, in lm-eval's own Jinja environment."""
    from lm_eval.utils import apply_template

    return apply_template("{{" + expr + "}}", doc)


def _structure(leaf: Any, docs: Sequence[dict], answer_delimiter: str | None) -> Structure:
    """The task's prompt structure: its Jinja template's, or the one every document's rendered prompt
    aligns to (demonstrations included; see ``aligned_structure``)."""
    if leaf.multiple_input:
        return structure_of(list(_CONTEXT), answer_delimiter)
    text = leaf.config.doc_to_text
    if isinstance(text, str) and "{{" in text and "{%" not in text and "{#" not in text:
        return structure_of(jinja_skeleton(text), answer_delimiter)
    rendered = [leaf.doc_to_text(d) for d in docs]
    if not all(isinstance(r, str) for r in rendered):
        raise LlmgenError("its doc_to_text does not return the prompt text")
    return aligned_structure(rendered, docs, answer_delimiter, leaf.doc_to_text)


def _gold(leaf: Any, doc: dict, choices: list[str]) -> int:
    """The gold choice's index as lm-eval's process_results reads it (an index, a choice text, or
    the first of a list of golds)."""
    gold = leaf.doc_to_target(doc)
    if isinstance(gold, list):
        gold = gold[0]
    if isinstance(gold, str):
        gold = choices.index(gold) if gold in choices else int(gold)
    return int(gold)


def _answer_text(leaf: Any, doc: dict, fewshot: bool) -> str:
    """A document's answer as lm-eval writes it after a demonstration (``build_qa_turn``: the
    ``doc_to_choice`` entry of an integer target, the first of a list of targets, else the target)."""
    cfg = leaf.fewshot_cfg if fewshot else leaf.config
    a = leaf.doc_to_target(doc, cfg.doc_to_target) if fewshot else leaf.doc_to_target(doc)
    c = (leaf.doc_to_choice(doc, cfg.doc_to_choice) if fewshot else leaf.doc_to_choice(doc)) \
        if cfg.doc_to_choice else None
    return str(c[a] if c and isinstance(a, int) else a[0] if isinstance(a, list) else a)


# A multiple-input task (Winogrande) puts each choice in its own context and scores one continuation:
# its prompt is that context, one descriptor-less value joined to the continuation by target_delimiter.
_CONTEXT = ["", Slot("context", None), ""]


def _fields_doc(leaf: Any, st: Structure, doc: dict, fewshot: bool = False) -> dict[str, Any]:
    """One lm-eval document as the layout's values; a multiple-choice document's choices and gold
    index, a generate_until document's answer text (what a demonstration ends with); a
    multiple-input document's contexts (one per choice, the gold one as its value)."""
    if leaf.multiple_input:
        contexts = [str(x) for x in leaf.doc_to_choice(doc)]
        gold = int(leaf.doc_to_text(doc))
        return {"context": contexts[gold], "contexts": contexts, "choices": contexts, "label": gold,
                "target": str(leaf.doc_to_target(doc))}
    values = st.values(slot_values(st.slots, doc, _jinja))
    if leaf.OUTPUT_TYPE == "multiple_choice":
        choices = [str(x) for x in leaf.doc_to_choice(doc)]
        return {**values, "choices": choices, "label": _gold(leaf, doc, choices), "target": _answer_text(leaf, doc, fewshot)}
    return {**values, "target": _answer_text(leaf, doc, fewshot)}


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


def _answer_enumeration(st: Structure, docs: Sequence[dict]) -> str | None:
    """The enumeration whose original labels are the choices (MMLU's ``A``..``D``): its answers
    then follow each format's numbering."""
    for key, _ in reversed(st.enumerations):
        if all(d["choices"] == st.enumeration_labels(key, len(d[key])) for d in docs):
            return key
    return None


@dataclass
class LmevalFieldsTask(Task):
    """An lm-eval task as a layout, joined and scored as lm-eval joins and scores it.

    The prompt is lm-eval's ``fewshot_context`` in each format: the description as is, each
    demonstration (drawn per document by lm-eval's seeded sampler) answered and followed by the task's
    ``fewshot_delimiter``, then the document. Multiple choice is scored by the task's own
    ``process_results`` on each choice's loglikelihood (mc2's probability mass included); a
    generate_until task's responses go through the task's own filter ensembles and
    ``process_results``, generated with its ``generation_kwargs`` as HFLM reads them.
    """

    demos: list[list[dict]] = dc_field(default_factory=list)
    leaf: Any = None
    lm_docs: list[dict] = dc_field(default_factory=list)
    seed: int = 0

    def demonstrations(self, doc: dict, k: int, doc_id: int = 0) -> list[dict]:
        return self.demos[doc_id][:k] if k else []

    def generation_sampling(self, backend: Backend):
        """The task's ``generation_kwargs`` as one ``SamplingConfig`` (the same as an ``lmeval:`` run's)."""
        return generation_settings(self.leaf.config.generation_kwargs or {}, backend.tokenizer, self.seed)

    def score_choices(self, doc: dict, logprobs: list[float], doc_id: int | None = None) -> Scored:
        """The task's own multiple-choice metrics (``process_results``) of one document's choice
        loglikelihoods, named as an ``lmeval:`` run names them; the outcome (``correct``) is the first
        metric == 1, the prediction the most likely choice in the original format."""
        i = self.docs.index(doc) if doc_id is None else doc_id
        out = self.leaf.process_results(self.lm_docs[i], [(float(lp), False) for lp in logprobs])
        values = {m: float(v) for m, v in out.items() if _number(v) is not None}
        choices = answers_in(self, self.prompt.original, doc) if self.prompt is not None else list(doc["choices"])
        gold = int(doc["label"]) if "label" in doc else -1
        return Scored(choice_logprobs=list(logprobs), choices=choices, gold_index=gold, values=values,
                      predictions=[choices[choice_prediction(logprobs, [1.0] * len(logprobs))]],
                      correct=[next(iter(values.values()), 0.0) == 1.0])

    def score_responses(self, responses: list[str], doc_id: int) -> tuple[list[bool], dict[str, float]]:
        """(correct, metrics) of one document's responses: each filter ensemble of the task, then its
        ``process_results``, as lm-eval's evaluator runs them; metrics are named as an ``lmeval:`` run
        names them (``exact_match/get-last``). ``correct`` (the bandit's outcome) is the first metric == 1."""
        doc = self.lm_docs[doc_id]
        metrics: dict[str, float] = {}
        for ensemble in self.leaf._filters:
            resps: list = [list(responses)]
            for step in ensemble.filters:
                resps = list(step().apply(resps, [doc]))
            for m, v in self.leaf.process_results(doc, [resps[0]]).items():
                metrics[m if ensemble.name == "none" else f"{m}/{ensemble.name}"] = float(v)
        first = next(iter(metrics.values()))
        return [first == 1.0] * len(responses), metrics


def _check_convertible(leaf: Any, config: EvalConfig, k: int) -> None:
    """Refuse (LlmgenError, one line) what a layout cannot reproduce or score per format."""
    c = leaf.config
    if leaf.OUTPUT_TYPE not in ("multiple_choice", "generate_until"):
        raise LlmgenError(f"it is {leaf.OUTPUT_TYPE} (multiple_choice and generate_until lm-eval tasks are converted)")
    if config.apply_chat_template:
        raise LlmgenError("--apply-chat-template is not supported for lm-eval tasks with --formats")
    if c.gen_prefix:
        raise LlmgenError("it has a gen_prefix")
    if "{{" in (c.description or "") or "{%" in (c.description or ""):
        raise LlmgenError("its description is a per-document template")
    if leaf.OUTPUT_TYPE == "generate_until":
        from lm_eval.api.metrics import mean

        if (c.repeats or 1) != 1:
            raise LlmgenError(f"it repeats each request {c.repeats} times (one response per document is scored)")
        other = {m: getattr(f, "__name__", str(f)) for m, f in leaf.aggregation().items() if f is not mean}
        if other:
            raise LlmgenError(f"its metrics {other} are not per-document means")
    elif callable(c.process_results) and set(leaf.aggregation()) - {"acc", "acc_norm", "acc_bytes"}:
        raise LlmgenError("it scores with its own process_results function")


def _delimiter(leaf: Any, k: int) -> str | None:
    """The whitespace between a prompt and its answer (None: a generate_until task without
    demonstrations never writes one); demonstrations must use the same."""
    c, fs = leaf.config, leaf.fewshot_cfg
    if leaf.OUTPUT_TYPE != "multiple_choice" and not k:
        return None
    delim = c.target_delimiter if leaf.OUTPUT_TYPE == "multiple_choice" else fs.target_delimiter
    if k and fs.target_delimiter != delim:
        raise LlmgenError(f"its few-shot target_delimiter {fs.target_delimiter!r} is not its target_delimiter {delim!r}")
    return delim


def format_task(task: Task, config: EvalConfig) -> tuple[Task, Format]:
    """The ``lmeval:NAME`` task as an llmgen Task with a prompt layout (for ``--formats``), with its original format.

    A single ``multiple_choice`` or ``generate_until`` task without a chat template is converted;
    few-shot demonstrations are the ones lm-eval's seeded sampler draws for each document. Format 0 is
    checked here, document by document, to give exactly lm-eval's own requests (a multiple-choice
    document's (context, continuation) pairs, a generate_until document's context), so a prompt
    this cannot reproduce is refused in one line before any model loads.
    """
    lm_name = task.name[len(PREFIX):]
    why = f"--formats cannot vary lm-eval task {lm_name!r}: "
    leaves = task.leaves if isinstance(task, LmevalTask) else list(task_manager().load([lm_name])["tasks"].values())
    if len(leaves) != 1:
        raise LlmgenError(why + "it is a group (give its tasks one by one)")
    leaf = leaves[0]
    c, fs = leaf.config, leaf.fewshot_cfg
    k = config.num_fewshot if config.num_fewshot is not None else c.num_fewshot or 0
    ranked = leaf.OUTPUT_TYPE == "multiple_choice"
    lm_docs = list(leaf.eval_docs)[: config.limit] if config.limit else list(leaf.eval_docs)
    try:
        _check_convertible(leaf, config, k)
        raw_demos = _lmeval_demos(leaf, lm_docs, k, config.fewshot_seed)
        if any(leaf.doc_to_text(d, fs.doc_to_text) != leaf.doc_to_text(d) for ds in raw_demos for d in ds):
            raise LlmgenError("its few-shot examples have their own doc_to_text")
        st = _structure(leaf, lm_docs + [d for ds in raw_demos for d in ds], _delimiter(leaf, k))
        docs = [_fields_doc(leaf, st, doc) for doc in lm_docs]
        demos = [[_fields_doc(leaf, st, d, fewshot=True) for d in ds] for ds in raw_demos]
    except LlmgenError as e:
        raise LlmgenError(why + str(e)) from None
    except Exception as e:  # a document the task's own code cannot render
        raise LlmgenError(why + f"its prompts do not render: {type(e).__name__}: {e}") from None
    layout = st.layout
    answer_key = _answer_enumeration(st, docs + [d for ds in demos for d in ds]) if ranked else None
    if not ranked and layout.enumerations:  # the task's own metric reads the original option labels
        layout = replace(layout, fixed=tuple(e.slot("numbering") for e in layout.enumerations))
    fields = [(e.descriptor, e.key) for e in walk(layout.fields) if isinstance(e, Field)]
    prompt = PromptStructure(layout, st.original, answer_key, fewshot_delimiter=fs.fewshot_delimiter, gold_key="target",
                             per_choice=("contexts", "context") if leaf.multiple_input else None)
    common = dict(name=task.name, docs=docs, demos=demos, num_fewshot=k, fewshot_docs=[d for ds in demos for d in ds],
                  input_fields=fields, output_descriptor=layout.output, prompt=prompt,
                  instruction=c.description or "", leaf=leaf, lm_docs=lm_docs, seed=config.seed, description=f"lm-eval task {lm_name} as a prompt layout")
    if ranked:
        native = LmevalFieldsTask(**common, target_key="label", output_type="multiple_choice", choices_key="choices",
                                  choice_prefix=c.target_delimiter, metrics=("acc", "acc_norm"))
    else:
        native = LmevalFieldsTask(**common, target_key="target", output_type="generate", metrics=())
    _check_format_zero(leaf, native, lm_docs, k, config.fewshot_seed, why)
    return native, st.original


def _check_format_zero(leaf: Any, native: LmevalFieldsTask, lm_docs: Sequence[dict], k: int, seed: int,
                       why: str) -> None:
    """Format 0 must give lm-eval's own requests for every document (refused in one line otherwise)."""
    if k:
        leaf.set_fewshot_seed(seed)  # the same draws again, now as lm-eval's own contexts
    original = prompt_structure(native).original
    for i, (doc, ours) in enumerate(zip(lm_docs, native.docs, strict=True)):
        context = leaf.fewshot_context(doc, k)
        demos = native.demonstrations(ours, k, i)
        text, inputs = prompt_in(native, original, demos, ours), inputs_in(native, original, demos, ours)
        if inputs is not None:
            got = [p for t in inputs for p in choice_pairs(t, [ours["target"]])]
            expected = [(ctx, f"{leaf.config.target_delimiter}{ours['target']}") for ctx in context]
        elif native.output_type == "multiple_choice":
            got = choice_pairs(text, answers_in(native, original, ours))
            expected = [(context, f"{leaf.config.target_delimiter}{x}") for x in ours["choices"]]
        else:
            got, expected = generation_prompt(text), context
        if got != expected:
            raise LlmgenError(why + f"its original format does not reproduce lm-eval's prompt of document {i}: "
                              f"{context[-60:]!r}")

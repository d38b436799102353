"""Only-IF (Zhang, Wang, Charton 2024): instruction diversity drives generalisation.

Two experiments:

- ``SweepConfig`` -> :func:`run_sweep`: train small models from scratch on Markov string rewriting
  (``llmgen.recipes.instruction_diversity.markov``) over a grid of *number of distinct instructions* (and optionally domain
  mixtures and seeds) at a fixed example budget, and measure exact-match accuracy on *unseen*
  instructions, split into no-op and rewrite examples. Each finished cell is saved atomically
  under ``cells/`` and never rerun, so an interrupted sweep resumes where it stopped; a cell's
  file name carries a hash of everything that defines it, so changing a setting makes new cells
  instead of silently reusing stale ones.
- ``DatasetDiversityConfig`` -> :func:`run_dataset_diversity`: embed a real instruction dataset
  (one or more sources, each a domain, or a domain field), report cluster count, mean pairwise
  cosine distance and Vendi score overall and per domain, plot a PCA projection, and optionally
  write a fixed-size, diversity-maximising subset across domains as a new JSONL file.

``run(config)`` dispatches on the config type.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from llmgen.backends import backend_on_model
from llmgen.config import EvalSettings, check_fixed, dump_config, load_config
from llmgen.errors import LlmgenError
from llmgen.io import atomic_write_json, atomic_write_jsonl, atomic_write_text, mark_run, read_json
from llmgen.recipes.instruction_diversity.markov import MarkovConfig, generate, make_example
from llmgen.training.config import TrainConfig

# --- sweep configuration -------------------------------------------------------------------------


def sweep_train() -> TrainConfig:
    """The paper's optimiser (AdamW lr 1e-3, linear schedule), CPU-sized: 3 epochs, batch 64."""
    return TrainConfig(lr=1e-3, epochs=3.0, batch_size=64, warmup_ratio=0.05, weight_decay=0.01, schedule="linear",
                       log_every=50, save_final=False)


@dataclass
class SweepConfig:
    """A grid of training runs. Defaults are a CPU-sized toy; :meth:`paper` gives the paper's scale.

    ``task`` is the Markov generator config; its ``num_instructions`` is replaced by each grid
    value, and its seed is offset by the cell seed (so every seed has its own data, while the
    test set is shared by all cells of one seed). ``domain_mixtures`` is a list of domain lists
    (``None``: only ``task.domains``). Training uses the shared loop with the ``ce`` loss on the
    answer only.
    """

    output_dir: str = "runs/instruction_diversity"
    task: MarkovConfig = field(default_factory=lambda: MarkovConfig(
        alphabet="abcdef", input_length=(12, 16), pattern_length=(2, 4), budget=20_000,
        noop_fraction=0.1, test_instructions=100, test_examples_per_instruction=4))
    num_instructions: list[int] = field(default_factory=lambda: [10, 100, 1000])
    domain_mixtures: list[list[str]] | None = None
    seeds: list[int] = field(default_factory=lambda: [0])
    # model (paper: 6 layers, width 256, 4 heads)
    hidden_size: int = 128
    intermediate_size: int = 512
    num_layers: int = 2
    num_heads: int = 2
    # training (paper: AdamW lr 1e-3, linear schedule); train.save_final keeps each cell's model
    train: TrainConfig = field(default_factory=lambda: sweep_train())
    # evaluation: greedy exact match on unseen (and seen) rules, eval.batch_size prompts per batch
    seen_eval_examples: int = 200
    eval: EvalSettings = field(default_factory=lambda: EvalSettings(batch_size=128))
    torch_threads: int | None = None  # e.g. 1 on a shared CPU, where thread oversubscription is costly

    # Set per cell by the recipe: the tiny model, the Markov data and its length, the seed, the folder;
    # evaluation is greedy through the HF backend on the in-memory model, answers cut at the newline.
    FIXED_KEYS: ClassVar[tuple[str, ...]] = (
        *(f"train.{n}" for n in ("model", "data", "data_format", "prompt_field", "answer_field", "text_field",
                                 "split", "max_length", "loss", "loss_args", "seed", "eval_every", "output_dir",
                                 "resume", "progress")),
        "eval.backend", "eval.max_new_tokens", "eval.num_samples", "eval.temperature", "eval.top_p", "eval.limit")

    @classmethod
    def paper(cls, **overrides: Any) -> SweepConfig:
        """The paper's scale (Fig. 2a): inputs 50, patterns 20, budget 10^6, 6x256x4 GPT-2-sized
        model; every training and test input contains the pattern ("all input sequences feature
        at least one instance of the replacement rule"): no no-ops unless set through ``task``."""
        task = MarkovConfig(input_length=(50, 50), pattern_length=(20, 20), budget=1_000_000, noop_fraction=0.0,
                            test_noop_fraction=0.0, test_instructions=100, test_examples_per_instruction=10)
        return cls._preset(task, [10, 100, 200, 300, 400, 500, 1000, 2000], overrides)

    @classmethod
    def paper_semantic(cls, k_max: int = 6, **overrides: Any) -> SweepConfig:
        """The paper's semantic-diversity experiment (Section 2.3.4, Fig. 4; Appendix B.2: inputs
        of 500, patterns of 60): train on repeated, periodic and mirrored rules of strength
        k = 3..``k_max``, test on the weaker constraints k < 3 (k = 2, and k = 1: unconstrained);
        no no-ops unless set through ``task``."""
        if k_max < 3:
            raise LlmgenError(f"k_max must be at least 3 (training strengths are 3..k_max), got {k_max}")
        families = ("repeated", "periodic", "mirrored")
        task = MarkovConfig(input_length=(500, 500), pattern_length=(60, 60), budget=1_000_000, noop_fraction=0.0,
                            test_noop_fraction=0.0, test_instructions=100, test_examples_per_instruction=10,
                            domains=[f"{d}:{k}" for d in families for k in range(3, k_max + 1)],
                            test_domains=["free", *(f"{d}:2" for d in families)])
        return cls._preset(task, [500, 1000, 5000, 10000], overrides)

    @classmethod
    def _preset(cls, task: MarkovConfig, grid: list[int], overrides: dict[str, Any]) -> SweepConfig:
        """The paper's model shape and 50 epochs on ``task``; ``overrides`` are (dotted) config keys."""
        base = cls(task=task, num_instructions=grid, hidden_size=256, intermediate_size=1024, num_layers=6,
                   num_heads=4, train=replace(sweep_train(), epochs=50.0, batch_size=64))
        return load_config(cls, None, overrides, base=base)

    def validate(self) -> None:
        check_fixed(self)
        self.train.validate()
        self.eval.validate()
        if not self.num_instructions or any(n < 1 for n in self.num_instructions):
            raise LlmgenError(f"num_instructions must be a non-empty list of positive counts, got {self.num_instructions}")
        if not self.seeds:
            raise LlmgenError("seeds must not be empty")
        if self.domain_mixtures is not None and (not self.domain_mixtures or not all(self.domain_mixtures)):
            raise LlmgenError("domain_mixtures must be a non-empty list of non-empty domain lists")
        if self.hidden_size % self.num_heads:
            raise LlmgenError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if min(self.hidden_size, self.intermediate_size, self.num_layers, self.num_heads) < 1 \
                or self.seen_eval_examples < 0:
            raise LlmgenError("model sizes must be >= 1 and seen_eval_examples >= 0")
        for cell in self.cells():  # checks every cell's task (budget >= instructions, lengths, ...)
            cell["task"].validate()

    def cells(self) -> list[dict]:
        """One dict per grid cell: ``{"num_instructions", "mixture", "seed", "task"}``."""
        mixtures = self.domain_mixtures or [list(self.task.domains)]
        out = []
        for mixture in mixtures:
            for n in self.num_instructions:
                for seed in self.seeds:
                    task = MarkovConfig(**{**asdict(self.task), "num_instructions": n,
                                           "domains": list(mixture), "seed": self.task.seed + seed})
                    out.append({"num_instructions": n, "mixture": list(mixture), "seed": seed, "task": task})
        return out


CELL_TRAIN_KEYS = ("lr", "epochs", "max_steps", "batch_size", "warmup_ratio", "weight_decay")


def _mixture_label(mixture: list) -> str:
    return "+".join(str(m) if not isinstance(m, dict) else ":".join(str(v) for v in m.values()) for m in mixture)


def cell_key(config: SweepConfig, cell: dict) -> str:
    """File stem of a cell: readable grid coordinates + a hash of everything that defines it."""
    defining = {k: v for k, v in asdict(config).items()
                if k not in ("output_dir", "task", "num_instructions", "domain_mixtures", "seeds", "train", "eval",
                             "torch_threads")}
    # the training settings that always defined a cell (flat, so old cell files keep their names),
    # plus any other training setting changed from the default
    train, default = asdict(config.train), asdict(sweep_train())
    defining.update({k: v for k, v in train.items() if k in CELL_TRAIN_KEYS or (v != default[k] and k != "save_final")})
    defining.update(task=asdict(cell["task"]), seed=cell["seed"])
    digest = hashlib.sha256(json.dumps(defining, sort_keys=True, default=str).encode()).hexdigest()[:10]
    mix = _mixture_label(cell["mixture"]).replace(":", "").replace("/", "_")
    return f"n{cell['num_instructions']}-{mix}-s{cell['seed']}-{digest}"


# --- one cell: generate, train, evaluate -----------------------------------------------------------


# One answer extraction for responses and targets: the text with surrounding whitespace removed
# (``strip`` would also drop a trailing '.', which a custom alphabet may hold).
STRIPPED = [{"function": "regex", "regex_pattern": r"\S(?:.*\S)?", "fallback": ""}]


def cell_task(name: str, rows: list[dict], max_new_tokens: int):
    """A sweep cell's test examples as a runner ``Task``: the prompt as written, greedy exact match."""
    from llmgen.tasks import Task

    return Task(name=name, docs=rows, template="{prompt}", target_key="output", metrics=("exact_match",),
                extract=STRIPPED, target_extract=STRIPPED, stop=("\n",), max_tokens=max_new_tokens,
                description="Markov rewriting: unseen-instruction exact match")


def evaluate_cell(model, tokenizer, tasks: list, batch_size: int, cache) -> tuple[dict, dict, list[dict]]:
    """Greedy continuations of each task through the runner on the in-memory model (HF backend):
    ``(results, uncertainty, rows)`` in the one schema."""
    from llmgen.cache import RequestCache
    from llmgen.evaluate import EvalConfig, evaluate_tasks

    was_training = model.training
    model.eval()
    try:
        backend = backend_on_model("hf", model, tokenizer, None, dtype="float32", batch_size=batch_size)
        cfg = EvalConfig(batch_size=batch_size, cache=None)
        results, unc, rows, _ = evaluate_tasks(backend, tasks, cfg, cache if cache is not None else RequestCache(None))
    finally:
        model.train(was_training)
    return results, unc, rows


def exact_match_report(rows: list[dict], predictions: list[str]) -> dict:
    """Accuracy overall and split by no-op / rewrite; a prediction matches after stripping spaces."""
    hits = {"all": [], "noop": [], "rewrite": []}
    for row, pred in zip(rows, predictions, strict=True):
        ok = pred.strip() == row["output"]
        hits["all"].append(ok)
        hits["noop" if row["noop"] else "rewrite"].append(ok)
    report = {}
    for name, xs in hits.items():
        report[f"accuracy_{name}" if name != "all" else "accuracy"] = sum(xs) / len(xs) if xs else None
        report[f"n_{name}"] = len(xs)
    return report


def seen_rule_examples(data, task: MarkovConfig, count: int) -> list[dict]:
    """Fresh inputs for training rules: accuracy on *seen* instructions, for contrast."""
    rng = random.Random(f"llmgen-markov:{task.seed}:seen-eval")
    seen = [r for r, c in zip(data.train_rules, data.counts, strict=True) if c > 0]
    return [make_example(rng.choice(seen), rng.random() < task.test_noop_fraction, task, rng) for _ in range(count)]


def run_cell(config: SweepConfig, cell: dict, cell_dir: Path, cache=None) -> dict:
    """Generate data, train a fresh tiny model with the shared loop, score unseen/seen rules through
    the runner (``cache``: the sweep's request cache; None: no cache)."""
    from llmgen.models import TinyConfig, tiny_model
    from llmgen.training import train
    from llmgen.training.data import prompt_answer_dataset

    task: MarkovConfig = cell["task"]
    t0 = time.perf_counter()
    data = generate(task)
    shape = TinyConfig(hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
                       num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads)
    model, tok = tiny_model(seed=cell["seed"], config=shape)
    max_len = max(len(r["prompt"]) + len(r["answer"]) for r in data.train + data.test) + 2
    feats = prompt_answer_dataset(data.train, tok, max_length=max_len, name="markov train")
    tcfg = replace(config.train, loss="ce", seed=cell["seed"], output_dir=str(cell_dir / "train"), progress=False,
                   max_length=max_len)
    result = train(tcfg, model=model, tokenizer=tok, train_dataset=feats)
    model = result.model

    max_new = max(len(r["answer"]) for r in data.train + data.test) + 2
    seen_rows = seen_rule_examples(data, task, config.seen_eval_examples) if config.seen_eval_examples else []
    key = cell_key(config, cell)
    tasks = [cell_task(f"{key}/unseen", data.test, max_new)]
    if seen_rows:
        tasks.append(cell_task(f"{key}/seen", seen_rows, max_new))
    results, unc, rows = evaluate_cell(model, tok, tasks, config.eval.batch_size, cache)
    unseen_rows = [r for r in rows if r["task"] == tasks[0].name]
    preds = [r["responses"][0] for r in unseen_rows]
    unseen = exact_match_report(data.test, preds)
    seen = exact_match_report(seen_rows, [r["responses"][0] for r in rows if r["task"] != tasks[0].name]) if seen_rows else {}
    atomic_write_jsonl(cell_dir / "samples.jsonl", [
        {**row, "rule": r["rule"], "input": r["input"], "prediction": p.strip(), "noop": r["noop"],
         "correct": p.strip() == r["output"]} for r, p, row in zip(data.test, preds, unseen_rows, strict=True)])
    if seen_rows:
        atomic_write_jsonl(cell_dir / "seen_samples.jsonl", [r for r in rows if r["task"] != tasks[0].name])
    if not config.train.save_final:
        shutil.rmtree(cell_dir / "train" / "checkpoints", ignore_errors=True)
    return {
        "num_instructions": cell["num_instructions"], "mixture": _mixture_label(cell["mixture"]),
        "seed": cell["seed"], "examples_per_instruction": task.budget / task.num_instructions,
        **{f"unseen_{k}": v for k, v in unseen.items()},
        **{f"seen_{k}": v for k, v in seen.items()},
        "final_loss": result.final_loss, "steps": result.steps, "train_seconds": round(result.train_seconds, 1),
        "seconds": round(time.perf_counter() - t0, 1), "data": data.summary(),
        "eval": {"results": results, "uncertainty": unc, "n_samples": {t.name: len(t.docs) for t in tasks},
                 "tasks": {t.name: t.describe() for t in tasks}},
    }


# --- the sweep -----------------------------------------------------------------------------------


def cell_samples(cell_dir: Path) -> list[dict]:
    """A finished cell's runner rows (unseen, then seen), as the sweep's samples.jsonl gathers them."""
    from llmgen.io import read_jsonl

    files = [cell_dir / "samples.jsonl", cell_dir / "seen_samples.jsonl"]
    return [r for f in files if f.is_file() for r in read_jsonl(f)]


def run_sweep(config: SweepConfig, progress: bool = True) -> dict:
    """Run every grid cell not yet done, then write ``results.json`` (the one results schema: one
    evaluation per cell and instruction kind), ``samples.jsonl``, ``results.md`` and the plot."""
    from llmgen.cache import RequestCache
    from llmgen.results import results_record

    config.validate()
    if config.torch_threads:
        import torch

        torch.set_num_threads(config.torch_threads)
    t0 = time.time()
    out = Path(config.output_dir)
    mark_run(out)  # a later `llmgen instruction-diversity sweep` may resume it
    atomic_write_json(out / "config.json", dump_config(config))
    cells = config.cells()
    rows, ran, skipped = [], 0, 0
    cache = RequestCache(out / "requests.sqlite")  # an interrupted cell's evaluation resumes from it
    try:
        for i, cell in enumerate(cells):
            key = cell_key(config, cell)
            path = out / "cells" / f"{key}.json"
            if path.is_file():
                rows.append(read_json(path))
                skipped += 1
                continue
            if progress:
                print(f"[{i + 1}/{len(cells)}] {key}", file=sys.stderr, flush=True)
            row = {"cell": key, **run_cell(config, cell, out / "cells" / key, cache)}
            atomic_write_json(path, row)
            rows.append(row)
            ran += 1
            if progress:
                print(f"  unseen {row['unseen_accuracy']:.3f} (no-op {row['unseen_accuracy_noop']}, rewrite "
                      f"{row['unseen_accuracy_rewrite']}), seen {row.get('seen_accuracy')}, {row['seconds']}s",
                      file=sys.stderr, flush=True)
        cache_stats = {"hits": cache.hits, "misses": cache.misses, "path": str(cache.path)}
    finally:
        cache.close()
    table = summarise(rows)
    evals = [r["eval"] for r in rows]
    merged = {k: {n: v for e in evals for n, v in e[k].items()} for k in ("results", "uncertainty", "n_samples", "tasks")}
    atomic_write_jsonl(out / "samples.jsonl", [s for r in rows for s in cell_samples(out / "cells" / r["cell"])])
    atomic_write_json(out / "results.json", results_record(
        config=dump_config(config), model="tiny (trained per cell)", backend={"name": "hf", "model": "in-memory"},
        seed=config.seeds[0], timings={"total_s": round(time.time() - t0, 2)},
        cache=cache_stats, **merged, extra={"cells": rows, "table": table, "ran": ran, "skipped": skipped}))
    atomic_write_text(out / "results.md", markdown_table(table))
    plot_sweep(table, out / "accuracy_vs_instructions.png")
    return {"output_dir": str(out), "cells": rows, "table": table, "ran": ran, "skipped": skipped}


def summarise(rows: list[dict]) -> list[dict]:
    """Mean over seeds per (mixture, number of instructions)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["mixture"], r["num_instructions"])].append(r)
    table = []
    for (mixture, n), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        entry = {"mixture": mixture, "num_instructions": n, "seeds": len(rs),
                 "examples_per_instruction": rs[0]["examples_per_instruction"]}
        for k in ("unseen_accuracy", "unseen_accuracy_noop", "unseen_accuracy_rewrite", "seen_accuracy", "final_loss"):
            vals = [r[k] for r in rs if r.get(k) is not None]
            entry[k] = sum(vals) / len(vals) if vals else None
        table.append(entry)
    return table


def markdown_table(table: list[dict]) -> str:
    def f(x: Any) -> str:
        return "–" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)

    head = ("| mixture | instructions | examples/instr. | seeds | unseen acc | unseen no-op | unseen rewrite "
            "| seen acc | final loss |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    body = "".join(f"| {r['mixture']} | {r['num_instructions']} | {r['examples_per_instruction']:g} | {r['seeds']} | "
                   f"{f(r['unseen_accuracy'])} | {f(r['unseen_accuracy_noop'])} | {f(r['unseen_accuracy_rewrite'])} | "
                   f"{f(r['seen_accuracy'])} | {f(r['final_loss'])} |\n" for r in table)
    return head + body


def plot_sweep(table: list[dict], path: Path) -> Path:
    """Unseen-instruction accuracy vs number of instructions (log x), one line per mixture."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for mixture in sorted({r["mixture"] for r in table}):
        rs = sorted((r for r in table if r["mixture"] == mixture), key=lambda r: r["num_instructions"])
        xs = [r["num_instructions"] for r in rs]
        line, = ax.plot(xs, [r["unseen_accuracy"] for r in rs], "o-", label=f"{mixture}: unseen")
        for key, style, name in (("unseen_accuracy_rewrite", "^:", "unseen rewrite"),
                                 ("unseen_accuracy_noop", "v:", "unseen no-op")):
            if all(r[key] is not None for r in rs):
                ax.plot(xs, [r[key] for r in rs], style, color=line.get_color(), alpha=0.7,
                        label=f"{mixture}: {name}")
        if any(r["seen_accuracy"] is not None for r in rs):
            ax.plot(xs, [r["seen_accuracy"] for r in rs], "s--", color=line.get_color(), alpha=0.5,
                    label=f"{mixture}: seen rules")
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("distinct training instructions (fixed budget)")
    ax.set_ylabel("exact-match accuracy")
    ax.set_title("Markov rewriting: generalisation to unseen instructions")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# --- real-dataset diversity ----------------------------------------------------------------------


@dataclass
class DatasetDiversityConfig:
    """Diversity report for an instruction dataset, and an optional diverse subset.

    ``data`` lists sources (JSONL/CSV files, saved ``datasets`` folders, hub ids); each source is
    a domain unless ``domain_field`` names a per-row domain. ``limit`` caps rows per source (a
    seeded sample). ``select_size > 0`` writes ``select_output`` (default
    ``<output_dir>/selected.jsonl``) with that many rows chosen by :func:`select_diverse` under
    ``domain_weights`` (equal by default), and reports a random subset of the same size for
    comparison.
    """

    data: list[str] = field(default_factory=list)
    instruction_field: str = "instruction"
    domain_field: str | None = None
    split: str = "train"
    limit: int | None = None
    embedding_model: str = "all-MiniLM-L6-v2"
    threshold: float = 0.5
    cluster_max_items: int = 5000
    select_size: int = 0
    select_output: str | None = None
    domain_weights: dict[str, float] | None = None
    seed: int = 0
    batch_size: int = 64
    output_dir: str = "runs/dataset_diversity"

    def validate(self) -> None:
        if not self.data:
            raise LlmgenError("no dataset given: set data to one or more JSONL files, folders or hub ids")
        if self.limit is not None and self.limit < 1:
            raise LlmgenError(f"limit must be >= 1, got {self.limit}")
        if self.select_size < 0 or self.cluster_max_items < 2:
            raise LlmgenError("select_size must be >= 0 and cluster_max_items >= 2")
        if not 0 <= self.threshold <= 2:
            raise LlmgenError(f"threshold (cosine distance) must be in [0, 2], got {self.threshold}")


def load_instructions(config: DatasetDiversityConfig) -> tuple[list[dict], list[str], list[str]]:
    """``(rows, instruction texts, domain labels)`` over all sources, with clear errors."""
    from llmgen.training.data import load_records

    rows, texts, domains = [], [], []
    names = [Path(str(s)).stem if Path(str(s)).suffix else Path(str(s)).name for s in config.data]
    for source, name in zip(config.data, names, strict=True):
        recs = load_records(source, split=config.split)
        if config.limit is not None and len(recs) > config.limit:
            keep = sorted(random.Random(f"{config.seed}:{source}").sample(range(len(recs)), config.limit))
            recs = [recs[i] for i in keep]
        key = config.instruction_field
        for i, r in enumerate(recs):
            if r.get(key) is None or not str(r[key]).strip():
                raise LlmgenError(f"{source} row {i + 1}: missing or empty field {key!r} (fields: {', '.join(r)})")
            if config.domain_field is not None and config.domain_field not in r:
                raise LlmgenError(f"{source} row {i + 1}: missing domain field {config.domain_field!r}")
            rows.append(r)
            texts.append(str(r[key]))
            domains.append(str(r[config.domain_field]) if config.domain_field else name)
    return rows, texts, domains


def run_dataset_diversity(config: DatasetDiversityConfig) -> dict:
    """Embed, measure (overall and per domain), plot, and optionally select a diverse subset."""
    import numpy as np

    from llmgen.evals.instruction_diversity import diversity_report, domain_quotas, pca_2d, select_diverse
    from llmgen.recipes.instruction_diversity.embeddings import get_embedder

    config.validate()
    rows, texts, domains = load_instructions(config)
    if config.select_size > len(rows):
        raise LlmgenError(f"select_size {config.select_size} is larger than the dataset ({len(rows)} rows)")
    if config.select_size and config.domain_weights:
        domain_quotas(domains, config.select_size, config.domain_weights)  # fail before embedding
    out = Path(config.output_dir)
    atomic_write_json(out / "config.json", dump_config(config))
    t0 = time.perf_counter()
    embedder = get_embedder(config.embedding_model)
    embedder.batch_size = config.batch_size
    emb = embedder.encode(texts)
    labels = np.asarray(domains)

    def report(e):
        return diversity_report(e, config.threshold, config.cluster_max_items, config.seed)

    results: dict[str, Any] = {"rows": len(rows), "embedding_model": config.embedding_model,
                               "embed_seconds": round(time.perf_counter() - t0, 1), "overall": report(emb),
                               "domains": {d: report(emb[labels == d]) for d in sorted(set(domains))}}
    plot_projection(pca_2d(emb), domains, out / "projection.png")
    if config.select_size:
        chosen = select_diverse(emb, domains, config.select_size, config.domain_weights, config.seed)
        rand = random.Random(config.seed).sample(range(len(rows)), config.select_size)
        target = Path(config.select_output) if config.select_output else out / "selected.jsonl"
        atomic_write_jsonl(target, [{**rows[i], "domain": rows[i].get("domain", domains[i])} for i in chosen])
        results["selection"] = {
            "path": str(target), "size": config.select_size,
            "domains": {d: int(sum(domains[i] == d for i in chosen)) for d in sorted(set(domains))},
            "selected": report(emb[chosen]), "random_subset": report(emb[rand])}
    atomic_write_json(out / "results.json", results)
    return {"output_dir": str(out), **results}


def plot_projection(coords, domains: list[str], path: Path) -> Path:
    """PCA scatter of the instruction embeddings, coloured by domain."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    for d in sorted(set(domains)):
        pts = coords[[i for i, x in enumerate(domains) if x == d]]
        ax.scatter(pts[:, 0], pts[:, 1], s=8, alpha=0.6, label=d)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title("instruction embeddings (PCA)")
    ax.legend(fontsize=8, markerscale=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run(config: SweepConfig | DatasetDiversityConfig) -> dict:
    """Run either experiment of the recipe."""
    if isinstance(config, SweepConfig):
        return run_sweep(config)
    if isinstance(config, DatasetDiversityConfig):
        return run_dataset_diversity(config)
    raise LlmgenError(f"run() takes a SweepConfig or DatasetDiversityConfig, got {type(config).__name__}")

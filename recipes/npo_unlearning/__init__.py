"""NPO unlearning on TOFU (Zhang, Lin, Bai, Mei 2024; Maini et al. 2024).

Pipeline: fine-tune a base model on TOFU ``full`` (:func:`finetune`) → fine-tune the same base on
the retain split only and save its forget-set truth ratios (:func:`make_retain_logs`, computed once
and reused) → unlearn the forget split with one or more methods from the same start model
(:func:`run`), evaluating forget quality and model utility at the start, every ``eval_every``
steps and at the end. Every method trains through the shared loop (``llmgen.training``) with a
loss from :mod:`llmgen.training.losses.unlearning`; LoRA (``lora_r > 0``, reference = adapters disabled) or full
fine-tuning (reference = frozen copy).

Outputs under ``output_dir``: ``config.json``, ``results.json`` (all metrics per eval point and
method), ``samples.jsonl`` (greedy generations per eval point), ``curve.png`` (model utility vs
forget quality across steps, per method) and ``table.md``.
"""

from __future__ import annotations

import copy
import math
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from importlib.resources import files
from pathlib import Path
from typing import Any, ClassVar

from llmgen.backends import backend_on_model
from llmgen.config import EvalSettings, check_fixed, dump_config
from llmgen.errors import LlmgenError
from llmgen.io import atomic_write_json, atomic_write_jsonl, atomic_write_text, safe_filename
from llmgen.tasks.tofu import (
    DEFAULT_ANSWER_TAG,
    DEFAULT_TEMPLATE,
    MAX_NEW_TOKENS,
    REFERENCE_DS_SIZE,
    SYNTHETIC,
    SyntheticTofuConfig,
    TofuTask,
    check_answer_style,
    check_answer_tag,
    check_forget_split,
    check_prompt_template,
    forget_config,
    load_retain_logs,
    load_tofu,
    prompt_text,
    qa_texts,
    retain_config,
    save_retain_logs,
    synthetic_source,
    tofu_task,
)
from llmgen.training.config import TrainConfig
from llmgen.training.data import Features, prompt_answer_dataset
from llmgen.training.losses.unlearning import get_method, method_args

IDK_FILE = "idontknow.jsonl"
"""TOFU's "I don't know" answers (``data/idontknow.jsonl`` of locuslab/tofu, 100 lines of plain text,
shipped unchanged as ``llmgen/data/idontknow.jsonl``; open-unlearning's ``data/idk.jsonl``)."""


def unlearn_train() -> TrainConfig:
    """open-unlearning's unlearning trainer: lr 1e-5, effective batch 32 (8 × accumulation 4),
    weight decay 0.01, 10 epochs, linear decay after ``warmup_epochs`` of warm-up."""
    return TrainConfig(lr=1e-5, epochs=10.0, batch_size=8, grad_accum=4, weight_decay=0.01, schedule="linear",
                       max_grad_norm=1.0, lora_alpha=32, max_length=256, save_final=False)


def finetune_train() -> TrainConfig:
    """TOFU's ``config/finetune.yaml``/``finetune.py``: 5 epochs, effective batch 32, lr 1e-5, weight
    decay 0.01, linear decay after one warm-up epoch, max length 500. TOFU's batch 16 per device ran
    on 2 GPUs (its README: ``torchrun --nproc_per_node=2``), so 32 per optimizer step: its released
    ``checkpoint-625`` is 4000 rows × 5 epochs / 32. On one process that is 16 × accumulation 2."""
    return TrainConfig(lr=1e-5, epochs=5.0, batch_size=16, grad_accum=2, weight_decay=0.01, schedule="linear",
                       lora_alpha=32, max_length=500, save_final=False)


# TrainConfig fields the recipe sets itself (per method and stage: start model, TOFU streams, the
# method's loss, warm-up from warmup_epochs, one folder per method).
RECIPE_TRAIN_FIELDS = ("model", "data", "data_format", "prompt_field", "answer_field", "text_field", "split",
                       "loss", "loss_args", "warmup_steps", "warmup_ratio", "output_dir", "resume", "progress")


@dataclass
class UnlearnConfig:
    """One unlearning experiment: several methods from the same start model, same data and steps.

    ``data`` is ``"synthetic"`` (the generated set in llmgen's cache, the same one ``llmgen eval
    --tasks tofu_*`` reads; see ``llmgen.tasks.tofu.synthetic_source``), a folder of TOFU-format files,
    or a hub id (``locuslab/TOFU``). ``train`` is the unlearning run's training config (defaults:
    open-unlearning's, :func:`unlearn_train`; ``train.max_steps`` overrides ``train.epochs``;
    ``train.eval_every`` in steps, 0: start and end only; ``train.save_final`` keeps each model);
    ``finetune`` is the fine-tuning stages' (TOFU's, :func:`finetune_train`). Both warm up for
    ``warmup_epochs`` epochs, counted as TOFU does (:func:`warmup_steps`). ``methods`` names any
    registered unlearning method (``llmgen.training.losses.unlearning.UNLEARNING_METHODS``, plugins'
    included); ``method_args`` sets a method's own arguments by method (``method_args.npo.beta=0.2``
    leaves SimNPO's β 4.5 alone), the rest keep that method's defaults. ``synthetic`` sizes the generated set (authors, seed,
    forget splits, answer style: ``long`` gives TOFU-length answers). ``ds_size`` keeps the first
    N rows of each evaluation set, TOFU's 300 by default (``config/eval_everything.yaml``; null: all
    rows; recorded in results.json); ``eval.limit`` cuts further (quick runs). ``prompt_template`` is
    a model family of ``llmgen.tasks.tofu.MODEL_TEMPLATES`` (``llama2``, ``phi``, ``default``), ``chat``
    or a format string, the same for fine-tuning, unlearning and evaluation; ``answer_tag`` puts the
    family's answer tag in the context (``context``, open-unlearning's, the default) or scores it
    with the answer (``scored``, TOFU's); see ``llmgen.tasks.tofu.DEFAULT_ANSWER_TAG`` for why.
    ``eval_formats`` K > 0 also evaluates the start model and each method's final model in K prompt
    formats of the question (``llmgen.prompts.request_formats``, as ``llmgen eval --formats K``;
    format 0 is the plain evaluation; 0, the default: off): a model that forgot in the original
    format but still answers in another shows it in ``results.json``'s ``format_spread``.
    """

    model: str = "default"
    data: str = SYNTHETIC
    forget_split: str = "forget10"
    methods: list[str] = field(default_factory=lambda: ["npo"])
    retain_logs: str | None = None
    method_args: dict[str, dict[str, Any]] = field(default_factory=dict)
    warmup_epochs: float = 1.0
    train: TrainConfig = field(default_factory=unlearn_train)
    finetune: TrainConfig = field(default_factory=finetune_train)
    eval: EvalSettings = field(default_factory=lambda: EvalSettings(max_new_tokens=MAX_NEW_TOKENS))
    ds_size: int | None = REFERENCE_DS_SIZE
    prompt_template: str = DEFAULT_TEMPLATE
    answer_tag: str = DEFAULT_ANSWER_TAG
    synthetic: SyntheticTofuConfig = field(default_factory=SyntheticTofuConfig)  # data=synthetic: its size
    eval_formats: int = 0
    output_dir: str = "runs/npo_unlearning"

    # TOFU decodes greedily, one answer per question: no sampling settings, no batch size.
    FIXED_KEYS: ClassVar[tuple[str, ...]] = (
        *(f"{s}.{n}" for s in ("train", "finetune") for n in RECIPE_TRAIN_FIELDS),
        "eval.num_samples", "eval.temperature", "eval.top_p", "eval.batch_size")

    def args_of(self, method: str) -> dict[str, Any]:
        """``method``'s full arguments: its registered defaults with ``method_args[method]`` over them."""
        return method_args(get_method(method), self.method_args.get(method))

    def validate(self) -> None:
        """Every check that can fail, before anything is loaded or written."""
        if not self.methods:
            raise LlmgenError("no unlearning method given")
        stray = sorted(set(self.method_args) - set(self.methods))
        if stray:
            raise LlmgenError(f"method_args.{stray[0]}: not one of this run's methods ({', '.join(self.methods)}); "
                              f"arguments are set per method, e.g. method_args.{self.methods[0]}.beta=0.2")
        for m in self.methods:
            self.args_of(m)
            unknown = [n for n in get_method(m).streams if n not in STREAMS]
            if unknown:
                raise LlmgenError(f"method {m!r} reads a data stream {unknown[0]!r} this recipe does not make "
                                  f"(it makes {', '.join(STREAMS)})")
        check_answer_style(self.synthetic.answer_style, "synthetic.answer_style")
        if self.data == SYNTHETIC:
            check_forget_split(self.forget_split, percents=self.synthetic.forget_percents)
        else:
            check_forget_split(self.forget_split, self.data)
        check_fixed(self)
        self.eval.validate(task_budget=False)  # the TOFU tasks are built with this budget
        self.train.validate()
        self.finetune.validate()
        if self.ds_size is not None and self.ds_size < 1:
            raise LlmgenError(f"ds_size must be >= 1, got {self.ds_size}")
        if self.warmup_epochs < 0:
            raise LlmgenError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if self.eval_formats < 0:
            raise LlmgenError(f"eval_formats must be >= 0 (0: off), got {self.eval_formats}")
        check_prompt_template(self.prompt_template)
        check_answer_tag(self.answer_tag)

    def eval_size(self) -> int | None:
        """Rows kept per evaluation set: the smaller of ``ds_size`` and ``eval.limit``."""
        sizes = [n for n in (self.ds_size, self.eval.limit) if n is not None]
        return min(sizes) if sizes else None


def warmup_steps(n_examples: int, batch_size: int, grad_accum: int, warmup_epochs: float) -> int:
    """Optimizer steps in ``warmup_epochs`` epochs of ``n_examples``, counted as TOFU does
    (``finetune.py``/``forget.py``: ``max(1, max_steps // num_epochs)``, i.e. whole effective
    batches per epoch); 0 for no warm-up. TOFU and open-unlearning warm up for one epoch, then
    decay linearly."""
    if warmup_epochs <= 0:
        return 0
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return max(1, math.floor(warmup_epochs * n_examples) // (batch_size * grad_accum * world))


# --- data -----------------------------------------------------------------------------------------

STREAMS = ("forget", "retain", "idk")
"""The data streams the recipe builds (:func:`training_streams`); a method reads some of them."""


def data_source(config: UnlearnConfig) -> str:
    """The TOFU folder or hub id; ``synthetic`` is the cached generated set (written once, shared
    with ``llmgen eval --tasks tofu_*``), never a copy in the run folder."""
    return synthetic_source(config.synthetic) if config.data == SYNTHETIC else config.data


def qa_features(rows: list[dict], tokenizer, template: str, max_length: int, name: str,
                answers: list[str] | None = None, answer_tag: str = DEFAULT_ANSWER_TAG) -> list[dict]:
    """Tokenised prompt/answer features (loss on the scored text + EOS), TOFU's training format; the
    texts are the ones the evaluation scores (``llmgen.tasks.tofu.qa_texts``), BOS included, so they
    are tokenised without special tokens."""
    records = [dict(zip(("prompt", "answer"), qa_texts(tokenizer, template, r["question"],
                                                       answers[i] if answers else r["answer"], answer_tag), strict=True))
               for i, r in enumerate(rows)]
    return prompt_answer_dataset(records, tokenizer, max_length=max_length, name=name, add_special_tokens=False)


def idk_answers(source: str | os.PathLike | None = None) -> list[str]:
    """TOFU's "I don't know" answers: ``idontknow.jsonl`` beside a local TOFU folder when it has one,
    else the copy shipped with llmgen (one answer per line, stripped, as TOFU reads them)."""
    local = Path(source) / IDK_FILE if source is not None else None
    path = local if local is not None and local.is_file() else Path(str(files("llmgen") / "data" / IDK_FILE))
    answers = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not answers:
        raise LlmgenError(f"{path} has no answers")
    return answers


class IdkRows(Sequence):
    """IdkDPO's "I don't know" stream: row ``i`` answers forget question ``i`` with an answer drawn at
    random from ``answers`` every time the row is read, as TOFU's ``TextForgetDatasetDPOQA.__getitem__``
    and open-unlearning's ``QAwithIdkDataset.item_with_idk`` draw one (``torch.randint``) per item.
    The draws come from one generator seeded with the run seed, so the same run repeats them (a
    resumed run draws afresh from the seed)."""

    def __init__(self, questions: Sequence[str], answers: Sequence[str], encode: Callable[[str, str], Features],
                 seed: int) -> None:
        self.questions, self.answers, self.encode = list(questions), list(answers), encode
        self.rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.questions)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self.encode(self.questions[i], self.answers[self.rng.randrange(len(self.answers))])


def training_streams(names: set[str], source: str, forget: str, tokenizer, template: str, max_length: int,
                     answer_tag: str = DEFAULT_ANSWER_TAG, seed: int = 0) -> dict:
    """The named streams (``get_method(m).streams``): forget answers, retain answers, and "I don't
    know" answers to the forget questions (:class:`IdkRows`, drawn with ``seed``)."""
    forget_rows = load_tofu(source, forget_config(forget))
    streams: dict[str, Any] = {"forget": qa_features(forget_rows, tokenizer, template, max_length, "forget",
                                                     answer_tag=answer_tag)}
    if "retain" in names:
        streams["retain"] = qa_features(load_tofu(source, retain_config(forget)), tokenizer, template, max_length,
                                        "retain", answer_tag=answer_tag)
    if "idk" in names:
        # Row i of "idk" answers forget question i; the IdkDPO losses register "idk" as aligned,
        # so the loop draws both streams in the same order and each pair shares its question.
        def encode(question: str, answer: str) -> Features:
            return qa_features([{"question": question, "answer": answer}], tokenizer, template, max_length, "idk",
                               answer_tag=answer_tag)[0]

        streams["idk"] = IdkRows([r["question"] for r in forget_rows], idk_answers(source), encode, seed)
    return streams


# --- evaluation -----------------------------------------------------------------------------------


class Evaluator:
    """Scores a model on the TOFU task through the runner (``llmgen.evaluate.evaluate_task``, the
    path of ``llmgen eval --tasks tofu_*``), on HF in memory or on vLLM over a saved copy, and
    returns (metrics, per-example rows). The persistent request cache is bypassed: the weights
    change at every eval point, so no answer could be reused and none should be stored."""

    def __init__(self, config: UnlearnConfig, task: TofuTask, tokenizer) -> None:
        self.config, self.task, self.tokenizer = config, task, tokenizer
        self.described: dict[str, Any] | None = None  # the first eval point's backend

    def __call__(self, model, label: str) -> tuple[dict[str, float], list[dict]]:
        return self._on(model, label, lambda backend: score_task(backend, self.task))

    def formats(self, model, label: str) -> tuple[dict[str, Any], list[dict]]:
        """The model in ``eval_formats`` question formats: (``format_spread`` entry, rows tagged
        ``format_id``). Formats are sampled and intervals resampled with seed 0, so the start model,
        every method and every training seed are scored in the same formats."""
        return self._on(model, label, lambda backend: score_formats(backend, self.task, self.config.eval_formats))

    def _on(self, model, label: str, score: Callable[[Any], Any]):
        cfg = getattr(model, "config", None)
        use_cache = getattr(cfg, "use_cache", None)
        if cfg is not None:
            cfg.use_cache = True  # the training loop turns the KV cache off; generation wants it
        backend = self._backend(model, label)
        try:
            self.described = self.described or backend.describe()
            return score(backend)
        finally:
            backend.close()
            if cfg is not None:
                cfg.use_cache = use_cache

    def _backend(self, model, label: str):
        # hf scores the object; vLLM gets this eval point's weights in their own folder
        return backend_on_model(self.config.eval.backend, model, self.tokenizer,
                                Path(self.config.output_dir) / "eval_models" / safe_filename(label),
                                dtype=self.config.train.model_dtype, label=f"in-memory:{label}")


def score_task(backend, task: TofuTask) -> tuple[dict[str, float], list[dict]]:
    """The runner's evaluation of ``task`` on ``backend``, without the persistent cache."""
    from llmgen.cache import RequestCache
    from llmgen.evaluate import EvalConfig, evaluate_task

    return evaluate_task(backend, task, EvalConfig(model=backend.model_name, tasks=[task.name], cache=None),
                         RequestCache(None))


def score_formats(backend, task: TofuTask, num_formats: int) -> tuple[dict[str, Any], list[dict]]:
    """``task`` in ``num_formats`` question formats on ``backend`` (``llmgen eval --formats``' path),
    without the persistent cache."""
    from llmgen.cache import RequestCache
    from llmgen.evaluate import EvalConfig
    from llmgen.prompts.request_formats import evaluate_formats

    return evaluate_formats(backend, task, num_formats, EvalConfig(model=backend.model_name, tasks=[task.name], cache=None),
                            RequestCache(None))


def _samples(rows: list[dict], method: str, step: int) -> list[dict]:
    """The runner's per-example rows of one eval point, tagged with the method and step; ``task`` is
    the evaluation's key in results.json (``<task>/<method>``, see :func:`results_schema`)."""
    return [{**r, "task": f"{r['task']}/{method}", "method": method, "step": step} for r in rows]


def results_schema(config: UnlearnConfig, task: TofuTask, finals: dict[str, dict[str, float]],
                   described: dict[str, Any] | None, seconds: float) -> dict[str, Any]:
    """The keys ``llmgen eval`` writes to results.json, one entry per evaluated model
    (``<task>/start`` and ``<task>/<method>`` at its last eval point)."""
    from llmgen.results import results_record

    keys = {label: f"{task.name}/{label}" for label in finals}
    return results_record(config=dump_config(config), model=config.model, backend=described, seed=config.train.seed,
                          timings={"total_s": round(seconds, 2)}, cache={"hits": 0, "misses": 0, "path": None},
                          results={keys[k]: v for k, v in finals.items()}, uncertainty={keys[k]: {} for k in finals},
                          n_samples={keys[k]: len(task.docs) for k in finals},
                          tasks={keys[k]: task.describe() for k in finals})


# --- fine-tuning and retain logs ------------------------------------------------------------------


def finetune(model: str, data: str, split: str, output_dir: str, train: TrainConfig | None = None, *,
             warmup_epochs: float = 1.0, prompt_template: str = DEFAULT_TEMPLATE,
             answer_tag: str = DEFAULT_ANSWER_TAG) -> str:
    """Fine-tune ``model`` on one TOFU split (``full`` for the model to unlearn, ``retainNN`` for
    the retain-only reference) with the answer-only cross-entropy; returns a plain model folder
    (LoRA adapters are merged in, so the result loads anywhere). ``train`` defaults to TOFU's
    settings (:func:`finetune_train`); warm-up is ``warmup_epochs`` epochs (:func:`warmup_steps`)."""
    from llmgen.models import load_model, load_tokenizer
    from llmgen.training import train as train_loop
    from llmgen.training.modeling import is_peft

    train = train or finetune_train()
    prompt_text(load_tokenizer(model), check_prompt_template(prompt_template), "?")  # fails before loading
    net, tok = load_model(model, dtype=train.model_dtype)
    feats = qa_features(load_tofu(data, split), tok, prompt_template, train.max_length, split, answer_tag=answer_tag)
    tcfg = replace(train, loss="ce", output_dir=str(Path(output_dir) / "train"), progress=False,
                   warmup_steps=warmup_steps(len(feats), train.batch_size, train.grad_accum, warmup_epochs))
    result = train_loop(tcfg, model=net, tokenizer=tok, train_dataset=feats)
    trained = result.model.merge_and_unload() if is_peft(result.model) else result.model
    trained.config.use_cache = True
    folder = Path(output_dir) / "model"
    trained.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    atomic_write_json(Path(output_dir) / "finetune.json", {"model": model, "data": data, "split": split,
                                                            "final_loss": result.final_loss, "steps": result.steps})
    return str(folder)


def make_retain_logs(retain_model: str, data: str, forget_split: str, out_path: str,
                     prompt_template: str = DEFAULT_TEMPLATE, eval_limit: int | None = REFERENCE_DS_SIZE,
                     backend: str = "hf", dtype: str = "float32", max_new_tokens: int = MAX_NEW_TOKENS,
                     answer_tag: str = DEFAULT_ANSWER_TAG) -> str:
    """Evaluate a retain-only model on the forget split (the TOFU task's forget set, through the
    runner) and save its truth ratios with the per-example rows (the "retain logs" that forget
    quality compares against). Computed once per (model family, split); ``eval_limit`` must match
    the unlearning run's evaluated subset (e.g. TOFU's ds_size 300)."""
    from llmgen.backends import get_backend

    task = tofu_task(data, forget_split, ds_size=eval_limit, prompt_template=prompt_template,
                     max_new_tokens=max_new_tokens, roles=("forget",), answer_tag=answer_tag)
    be = get_backend(backend, retain_model, dtype=dtype)
    try:
        metrics, rows = score_task(be, task)
    finally:
        be.close()
    save_retain_logs(out_path, rows, {"model": retain_model, "data": data, "forget_split": forget_split,
                                      "forget_truth_ratio": metrics["forget.truth_ratio"]})
    return out_path


# --- the experiment -------------------------------------------------------------------------------


def run(config: UnlearnConfig) -> dict[str, Any]:
    """Evaluate the start model, unlearn with each method, evaluate along the way; write results.

    Under ``accelerate launch`` / ``torchrun`` every rank runs this (training is data-parallel and
    each rank evaluates its full copy of the model); only rank 0 writes the run folder."""
    import time

    from llmgen.models import load_model, load_tokenizer
    from llmgen.training import is_main_process, train

    t0 = time.time()
    config.validate()
    retain_ratios = load_retain_logs(config.retain_logs)  # a clear error before any work
    out = Path(config.output_dir)
    source = data_source(config)
    task = tofu_task(source, config.forget_split, ds_size=config.eval_size(), retain_ratios=retain_ratios,
                     prompt_template=config.prompt_template, max_new_tokens=config.eval.max_new_tokens,
                     answer_tag=config.answer_tag)
    prompt_text(load_tokenizer(config.model), config.prompt_template, "?")  # no chat template: fails now
    main = is_main_process()
    if main:
        atomic_write_json(out / "config.json", dump_config(config))

    start_model, tok = load_model(config.model, dtype=config.train.model_dtype)
    evaluator = Evaluator(config, task, tok)
    start, start_rows = evaluator(start_model, "start")
    samples = _samples(start_rows, "start", 0)
    results: dict[str, Any] = {"config": dump_config(config), "data": source, "ds_size": config.ds_size,
                               "prompt_template": config.prompt_template, "answer_tag": config.answer_tag,
                               "eval_rows": task.describe()["counts"], "start": start, "methods": {}}
    format_samples: list[dict] = []
    if config.eval_formats:
        spread, rows = evaluator.formats(start_model, "start-formats")
        results["format_spread"] = {f"{task.name}/start": spread}
        format_samples += _samples(rows, "start", 0)
    # Tokenised once, for every method: the union of the streams the methods read.
    all_streams = training_streams({n for m in config.methods for n in get_method(m).streams}, source,
                                   config.forget_split, tok, config.prompt_template, config.train.max_length,
                                   config.answer_tag, config.train.seed)
    for method in config.methods:
        args = config.args_of(method)
        curve: list[dict[str, Any]] = [{"step": 0, **start}]

        def eval_fn(model, step, method=method, curve=curve):
            metrics, rows = evaluator(model, f"{method}-step{step}")
            samples.extend(_samples(rows, method, step))
            curve.append({"step": step, **metrics})
            return {k: v for k, v in metrics.items() if k in ("forget_quality", "model_utility")}

        net = copy.deepcopy(start_model)
        tcfg = replace(config.train, loss=method, loss_args=args, output_dir=str(out / safe_filename(method)), progress=False,
                       warmup_steps=warmup_steps(len(all_streams["forget"]), config.train.batch_size,
                                                 config.train.grad_accum, config.warmup_epochs))
        streams = {k: all_streams[k] for k in get_method(method).streams}  # the method's order: forget first
        trained = train(tcfg, model=net, tokenizer=tok, train_dataset=streams, eval_fn=eval_fn)
        results["methods"][method] = {"args": args, "curve": curve, "final": curve[-1], "steps": trained.steps,
                                      "train_seconds": trained.train_seconds,
                                      "losses": [r["loss"] for r in trained.history if "loss" in r]}
        if config.eval_formats:  # the final model (the curve's last point) in every format
            spread, rows = evaluator.formats(trained.model, f"{method}-formats")
            results["format_spread"][f"{task.name}/{method}"] = spread
            format_samples += _samples(rows, method, trained.steps)
        del net, trained
        if main:
            atomic_write_json(out / "results.json", results)  # partial results survive a later failure
    finals = {"start": start, **{m: {k: v for k, v in r["final"].items() if k != "step"}
                                 for m, r in results["methods"].items()}}
    results.update(results_schema(config, task, finals, evaluator.described, time.time() - t0))
    if not main:
        return results
    results["plot"] = plot_curves(results, out / "curve.png")
    atomic_write_json(out / "results.json", results)
    atomic_write_jsonl(out / "samples.jsonl", samples)
    if format_samples:
        atomic_write_jsonl(out / "format_samples.jsonl", format_samples)
    atomic_write_text(out / "table.md", markdown_table(results))
    return results


def markdown_table(results: dict[str, Any]) -> str:
    """One row per method (final eval point) plus the start model."""
    cols = ["forget_quality", "model_utility", "forget.prob", "forget.rougeL", "forget.truth_ratio",
            "retain.prob", "retain.rougeL"]
    lines = ["| method | step | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 2)]

    def fmt(v):
        return "—" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))

    rows = [("start", {"step": 0, **results["start"]})] + [(m, r["final"]) for m, r in results["methods"].items()]
    for name, r in rows:
        lines.append(f"| {name} | {r['step']} | " + " | ".join(fmt(r.get(c)) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def plot_curves(results: dict[str, Any], path: str | os.PathLike) -> str:
    """Model utility (x) vs forget quality (y, log) across eval points, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for method, r in results["methods"].items():
        pts = [p for p in r["curve"] if "model_utility" in p]
        mu = [p["model_utility"] for p in pts]
        fq = [max(p.get("forget_quality", float("nan")), 1e-300) for p in pts]
        (line,) = ax.plot(mu, fq, marker="o", label=method)
        ax.annotate(f"{pts[-1]['step']}", (mu[-1], fq[-1]), fontsize=7, color=line.get_color())
        ax2.plot([p["step"] for p in pts], mu, marker="o", label=method, color=line.get_color())
    start = results["start"]
    if "model_utility" in start:
        ax.scatter([start["model_utility"]], [max(start.get("forget_quality", 1e-300), 1e-300)], marker="*",
                   s=160, color="k", zorder=5, label="start")
    ax.set_yscale("log")
    ax.set_xlabel("model utility")
    ax.set_ylabel("forget quality (KS p-value)")
    ax.set_title("unlearning trajectories")
    ax.legend(fontsize=8)
    ax2.set_xlabel("step")
    ax2.set_ylabel("model utility")
    ax2.set_title("utility during unlearning")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)

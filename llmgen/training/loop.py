"""``train()``: the one training loop every recipe uses, built on ``accelerate``.

The data is an endless stream of micro-batches: micro-batch ``m`` of stream ``s`` is a pure
function of (seed, m, s, world size, rank) (see ``data.batch_indices``). An optimizer step takes
``grad_accum`` consecutive micro-batches, so the run is ``total_steps * grad_accum`` micro-batches
and a checkpoint only needs ``m`` to resume at the exact same example. Paired streams draw one
micro-batch from each stream per step; the first stream defines the epoch, the others cycle.
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import llmgen.training.checkpoint as ckpt
from llmgen import io
from llmgen.errors import LlmgenError
from llmgen.io import atomic_write_json, atomic_write_jsonl, dumps, read_json
from llmgen.models import load_model, load_tokenizer
from llmgen.training.config import SCHEDULES, TrainConfig
from llmgen.training.data import (
    batch_indices,
    batches_per_epoch,
    build_dataset,
    check_features,
    pad_collate,
)
from llmgen.training.losses import (
    LossState,
    get_loss,
    loss_aligned_streams,
    loss_needs_reference,
    loss_streams,
)
from llmgen.training.modeling import (
    add_lora,
    enable_gradient_checkpointing,
    frozen_copy,
    is_peft,
    param_groups,
    trainable_parameters,
)

EvalFn = Callable[[Any, int], Mapping[str, float] | None]
KeepFn = Callable[[Any, dict], Any]  # (model, collated micro-batch) -> one bool per example


@dataclass
class TrainResult:
    """What a run produced. ``model`` is the trained (unwrapped) model, ready to use in-process."""

    final_loss: float
    steps: int
    epoch: float
    tokens: int
    tokens_per_s: float
    train_seconds: float
    output_dir: str
    final_path: str | None
    metrics_path: str
    checkpoints: list[str]
    num_processes: int
    tokens_per_rank: list[int]
    trainable_params: int
    resumed_from: str | None = None
    history: list[dict] = field(default_factory=list, repr=False)
    model: Any = field(default=None, repr=False)

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("model", "history")}


# --- setup ---------------------------------------------------------------------------------------


def _accelerator(config: TrainConfig):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    # Accelerator state is a per-process singleton; reset it so that several train() calls in one
    # process (tests, sweeps) may use different precision/accumulation. The process group stays.
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    trackers = _trackers(config.report_to)
    mp = "no" if config.mixed_precision == "fp32" else config.mixed_precision
    accelerator = Accelerator(mixed_precision=mp, gradient_accumulation_steps=config.grad_accum,
                              log_with=trackers or None, project_dir=config.output_dir, cpu=_cpu_only(config))
    _fsdp_on_cpu(accelerator)
    return accelerator


def _fsdp_on_cpu(accelerator) -> None:
    """FSDP asked for (``accelerate launch`` with an FSDP config) on a multi-process CPU group.

    accelerate switches to FSDP only for GPU-like device types and would silently train plain DDP on
    CPU; torch's ``fully_shard`` runs on CPU over gloo, so hand accelerate the plugin it skipped.
    """
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    on_cpu_group = accelerator.num_processes > 1 and accelerator.device.type == "cpu"
    if (on_cpu_group and getattr(accelerator.state, "fsdp_plugin", None) is None
            and os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"):
        from accelerate.state import PartialState

        accelerator.state.fsdp_plugin = FullyShardedDataParallelPlugin()
        # both shared states: AcceleratorState copies the type from PartialState when re-created
        accelerator.state.distributed_type = PartialState().distributed_type = DistributedType.FSDP


def _cpu_only(config: TrainConfig) -> bool:
    """True on machines without an accelerator (or when asked).

    accelerate only treats a torchrun-started group as multi-process CPU (gloo) when told it runs
    on CPU; otherwise every rank silently trains alone.
    """
    import torch

    if config.cpu:
        return True
    probe = getattr(torch, "accelerator", None)
    return not (probe.is_available() if probe is not None else torch.cuda.is_available())


def _trackers(requested: list[str]) -> list[str]:
    """Keep the requested trackers that are installed (TensorBoard/W&B are optional extras)."""
    import importlib.util

    modules = {"tensorboard": "tensorboard", "wandb": "wandb"}
    out = []
    for name in requested:
        if name not in modules:
            raise LlmgenError(f"unknown tracker {name!r} (use tensorboard or wandb)")
        if importlib.util.find_spec(modules[name]) is not None:
            out.append(name)
        else:
            print(f"warning: {name} is not installed; logging to metrics.jsonl only", file=sys.stderr)
    return out


def _load_tokenizer(config: TrainConfig, model, tokenizer):
    if model is None and not config.model:
        raise LlmgenError("no model: pass model= or set TrainConfig.model")
    if tokenizer is None and config.model:
        tokenizer = load_tokenizer(config.model)
    return tokenizer


def _load_model(config: TrainConfig, model):
    if model is None:
        model, _ = load_model(config.model, dtype=config.model_dtype)
    return model


def _datasets(config: TrainConfig, train_dataset, tokenizer) -> dict[str, list[dict]]:
    """Named streams of tokenised features, from objects or from ``config.data``."""
    if train_dataset is None:
        if config.data is None:
            raise LlmgenError("no training data: pass train_dataset= or set TrainConfig.data")
        if tokenizer is None:
            raise LlmgenError("a tokenizer is needed to tokenise TrainConfig.data")
        sources = config.data if isinstance(config.data, Mapping) else {"train": config.data}
        kw = dict(data_format=config.data_format, prompt_field=config.prompt_field,
                  answer_field=config.answer_field, text_field=config.text_field,
                  max_length=config.max_length, split=config.split)
        return {name: build_dataset(str(src), tokenizer, **kw) for name, src in sources.items()}
    if isinstance(train_dataset, Mapping) and "input_ids" not in train_dataset:
        return {name: check_features(ds, f"train_dataset[{name!r}]") for name, ds in train_dataset.items()}
    return {"train": check_features(train_dataset)}


def _pad_id(model, tokenizer) -> int:
    for src in (tokenizer, getattr(model, "config", None)):
        pid = getattr(src, "pad_token_id", None) if src is not None else None
        if pid is not None:
            return int(pid)
    eos = getattr(tokenizer, "eos_token_id", None) if tokenizer is not None else None
    return int(eos) if eos is not None else 0


# --- the loop ------------------------------------------------------------------------------------


def train(config: TrainConfig, model: Any = None, tokenizer: Any = None, train_dataset: Any = None,
          eval_fn: EvalFn | None = None, keep_fn: KeepFn | None = None) -> TrainResult:
    """Train ``model`` (or ``config.model``) on ``train_dataset`` (or ``config.data``) with ``config.loss``.

    ``train_dataset`` is a list of tokenised features (see ``llmgen.training.data``) or a dict of
    such lists for paired streams. ``eval_fn(model, step) -> {name: value}`` runs on every process
    every ``eval_every`` steps and at the end, under ``torch.no_grad()`` with the model in eval
    mode; its values land in ``metrics.jsonl`` as ``eval_<name>``. Writes ``config.json``,
    ``metrics.jsonl``, ``results.json``, ``checkpoints/step-N`` and ``final/`` under ``output_dir``.

    ``keep_fn(model, batch)`` (one stream, one process) filters and refills: each candidate
    micro-batch is scored under ``torch.no_grad()`` with the current weights, the examples it
    rejects are dropped and the micro-batch is filled from the next candidates (the DCO reference
    drops examples whose weight F <= 0.1 this way). ``epochs`` then counts passes over the
    candidates; the run stops early when they run out, with the schedule planned for ``total`` steps.
    """
    import torch
    from accelerate.utils import set_seed
    from transformers import get_scheduler

    config.validate()
    loss_fn = get_loss(config.loss)
    out = Path(config.output_dir)
    # Data problems are found before the (slow) model load and before anything is written.
    tokenizer = _load_tokenizer(config, model, tokenizer)
    streams = _datasets(config, train_dataset, tokenizer)
    wanted = loss_streams(loss_fn)
    if wanted is not None and set(wanted) - set(streams):
        raise LlmgenError(f"loss {config.loss!r} needs data streams {', '.join(wanted)}; got {', '.join(streams)}")
    if wanted is None and len(streams) > 1:
        raise LlmgenError(f"loss {config.loss!r} takes one data stream; got {', '.join(streams)}")
    check_resume(config)
    model = _load_model(config, model)

    accelerator = _accelerator(config)
    set_seed(config.seed)
    main = accelerator.is_main_process
    world, rank = accelerator.num_processes, accelerator.process_index

    # model: reference copy (before adapters), LoRA, checkpointing
    state = LossState(args=dict(config.loss_args), num_processes=world, process_index=rank)
    if loss_needs_reference(loss_fn) and config.lora_r <= 0 and not is_peft(model):
        state.ref_model = frozen_copy(model, config.ref_dtype, config.ref_device or str(accelerator.device))
        state.ref_mode = "copy"
    model = add_lora(model, config)
    if loss_needs_reference(loss_fn) and state.ref_mode is None:
        state.ref_mode = "adapter"
    if getattr(model, "config", None) is not None:
        model.config.use_cache = False
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    model.train()
    n_trainable, _ = trainable_parameters(model)

    names = list(streams)
    primary = len(streams[names[0]])
    aligned = set(loss_aligned_streams(loss_fn)) & set(names[1:])
    for name in sorted(aligned):
        if len(streams[name]) != primary:
            raise LlmgenError(f"stream {name!r} is paired row by row with {names[0]!r} and needs its length "
                              f"({primary} rows), got {len(streams[name])}")
    per_epoch = batches_per_epoch(primary, config.batch_size, world)
    if keep_fn is not None and (world > 1 or len(names) > 1):
        raise LlmgenError("keep_fn (filter and refill) needs one data stream on one process")
    total = config.max_steps or max(1, math.ceil(config.epochs * per_epoch / config.grad_accum))
    warmup = config.warmup_steps or math.ceil(config.warmup_ratio * total)

    optimizer = torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.lr,
                                  betas=tuple(config.adam_betas), eps=config.adam_eps)
    scheduler = get_scheduler(SCHEDULES[config.schedule], optimizer, num_warmup_steps=warmup,
                              num_training_steps=total)
    model, optimizer = accelerator.prepare(model, optimizer)
    # The scheduler counts optimizer steps itself (we step it only on synced steps), so it is
    # registered for checkpointing rather than prepared (a prepared one steps once per process).
    accelerator.register_for_checkpointing(scheduler)
    ckpt.install_lora_hooks(accelerator)
    unwrapped = accelerator.unwrap_model(model)
    state.policy = unwrapped
    pad_id = _pad_id(unwrapped, tokenizer)

    # resume or start fresh
    step, micro, tokens_before, history, resumed_from = 0, 0, 0, [], None
    found = ckpt.latest_checkpoint(out) if config.resume else None
    if found is not None:
        saved = ckpt.load_checkpoint(accelerator, found)
        _check_same_run(saved.get("config", {}), config)
        step, micro, tokens_before = saved["step"], saved["micro"], saved["tokens"]
        history = [r for r in _read_history(out) if r.get("step", 0) <= step]
        resumed_from = str(found)
    elif main:
        if config.resume:
            print(f"note: no checkpoint in {out}; training from step 0", file=sys.stderr)
        clear_run(out)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "config.json", config.to_dict())
        atomic_write_jsonl(out / "metrics.jsonl", history)
    accelerator.wait_for_everyone()
    if config.report_to:
        accelerator.init_trackers("llmgen", config={k: str(v) for k, v in config.to_dict().items()})

    def make_batch(m: int) -> tuple[int, dict]:
        """Micro-batch ``m`` on this rank, and the (primary stream's) epoch it belongs to."""
        parts, epoch = {}, 0
        for s, name in enumerate(names):
            feats = streams[name]
            order = 0 if name in aligned else s  # aligned streams reuse the first stream's order
            ep, idx = batch_indices(len(feats), config.batch_size, config.seed, m, world, rank, stream=order)
            epoch = ep if s == 0 else epoch
            parts[name] = {k: v.to(accelerator.device) for k, v in
                           pad_collate([feats[i] for i in idx], pad_id).items()}
        return epoch, parts[names[0]] if len(names) == 1 and wanted is None else parts

    refill = None
    if keep_fn is not None:
        limit = None if config.max_steps else math.ceil(config.epochs * per_epoch)
        refill = _Refill(streams[names[0]], config.batch_size, config.seed, limit,
                         lambda idx: {k: v.to(accelerator.device) for k, v in
                                      pad_collate([streams[names[0]][i] for i in idx], pad_id).items()})
        if found is not None:
            refill.drawn, refill.pending = saved["micro"], list(saved.get("pending", []))

    metrics_file = open(out / "metrics.jsonl", "a", encoding="utf-8") if main else None
    progress = _Progress(total, step, enabled=main and (config.progress if config.progress is not None
                                                          else sys.stderr.isatty()))
    session_tokens, t0, last_loss, epoch = 0, time.perf_counter(), float("nan"), micro / per_epoch
    log_loss = torch.zeros((), device=accelerator.device)
    log_parts: dict[str, float] = {}
    exhausted = False
    try:
        while step < total and not exhausted:
            step_loss = torch.zeros((), device=accelerator.device)
            grad_norm = None
            for _ in range(config.grad_accum):
                if refill is not None:
                    drawn = refill.next(accelerator.unwrap_model(model), keep_fn)
                    if drawn is None:  # candidates used up: the partial step is not taken
                        exhausted = True
                        break
                    (state.epoch, batch), micro = drawn, refill.drawn
                else:
                    state.epoch, batch = make_batch(micro)
                    micro += 1
                state.step = step
                epoch = micro / per_epoch  # epochs completed, fractional
                session_tokens += _count_tokens(batch)
                with accelerator.accumulate(model):
                    loss, parts = loss_fn(model, batch, state)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        if config.max_grad_norm:
                            grad_norm = accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                        optimizer.step()
                        if not accelerator.optimizer_step_was_skipped:
                            scheduler.step()
                        optimizer.zero_grad(set_to_none=True)
                step_loss += loss.detach() / config.grad_accum
                for k, v in parts.items():
                    if isinstance(v, int | float) or hasattr(v, "item"):
                        log_parts[k] = log_parts.get(k, 0.0) + float(v) / config.grad_accum
            if exhausted:
                break
            step += 1
            log_loss = step_loss
            if step % config.log_every == 0 or step == total:
                last_loss = accelerator.reduce(step_loss, reduction="mean").item()
                elapsed = time.perf_counter() - t0
                row = {"step": step, "epoch": round(epoch, 4), "loss": last_loss,
                       "lr": scheduler.get_last_lr()[0], "tokens": tokens_before + session_tokens * world,
                       "tokens_per_s": session_tokens * world / max(elapsed, 1e-9)}
                if grad_norm is not None:
                    row["grad_norm"] = float(grad_norm)
                if refill is not None:
                    row["refill_dropped"] = refill.dropped
                row.update({k: v for k, v in log_parts.items() if k not in row})
                _log(row, history, metrics_file, accelerator, config)
                progress.update(step, last_loss, row["tokens_per_s"])
            log_parts = {}
            if eval_fn is not None and config.eval_every and (step % config.eval_every == 0 or step == total):
                _run_eval(eval_fn, accelerator, model, step, history, metrics_file, config)
            if config.save_every and step % config.save_every == 0 and step < total:
                ckpt.save_checkpoint(accelerator, out, step, {
                    "step": step, "micro": micro, "tokens": tokens_before + session_tokens * world,
                    "epoch": epoch, "config": config.to_dict(),
                    **({"pending": refill.pending} if refill is not None else {})}, config.keep_checkpoints)
    finally:
        progress.close()
        if metrics_file is not None:
            metrics_file.close()
    if eval_fn is not None and (not config.eval_every or (exhausted and step % config.eval_every)):
        _run_eval(eval_fn, accelerator, model, step, history, metrics_file=None, config=config)

    seconds = time.perf_counter() - t0
    tok = torch.tensor([session_tokens], device=accelerator.device)
    per_rank = [int(x) for x in accelerator.gather(tok).tolist()]
    if math.isnan(last_loss):
        last_loss = accelerator.reduce(log_loss, reduction="mean").item()
    final_path = _save_final(accelerator, model, tokenizer, out) if config.save_final else None
    result = TrainResult(
        final_loss=last_loss, steps=step, epoch=round(epoch, 4), tokens=tokens_before + sum(per_rank),
        tokens_per_s=sum(per_rank) / max(seconds, 1e-9), train_seconds=seconds, output_dir=str(out),
        final_path=final_path, metrics_path=str(out / "metrics.jsonl"),
        checkpoints=[str(p) for p in ckpt.list_checkpoints(out)], num_processes=world,
        tokens_per_rank=per_rank, trainable_params=n_trainable, resumed_from=resumed_from,
        history=history, model=accelerator.unwrap_model(model))
    # Hand the model back ready for inference, as recipes evaluate it right after training.
    if getattr(result.model, "config", None) is not None:
        result.model.config.use_cache = True
    result.model.eval()
    if main:
        atomic_write_jsonl(out / "metrics.jsonl", history)
        atomic_write_json(out / "results.json", result.to_dict())
    if config.report_to:
        accelerator.end_training()
    accelerator.wait_for_everyone()
    return result


class _Refill:
    """Micro-batches of the examples ``keep_fn`` accepts under the current weights (see ``train``).

    Candidates come in the order of the plain stream (``batch_indices``), one micro-batch at a
    time; accepted ones wait in ``pending`` until a full micro-batch is ready, as in the DCO
    reference's refill. ``limit`` caps the candidate micro-batches drawn (None: endless, but a whole
    epoch of rejections in a row ends it, so a fully filtered data set cannot spin forever).
    """

    def __init__(self, feats: list, batch_size: int, seed: int, limit: int | None,
                 collate: Callable[[list[int]], dict]) -> None:
        self.n, self.batch_size, self.seed, self.limit, self.collate = len(feats), batch_size, seed, limit, collate
        self.drawn, self.dropped, self.pending, self.epoch = 0, 0, [], 0

    def next(self, model, keep_fn: KeepFn) -> tuple[int, dict] | None:
        import torch

        per_epoch, barren = batches_per_epoch(self.n, self.batch_size, 1), 0
        while len(self.pending) < self.batch_size:
            if (self.limit is not None and self.drawn >= self.limit) or barren >= per_epoch:
                return None
            self.epoch, idx = batch_indices(self.n, self.batch_size, self.seed, self.drawn, 1, 0)
            self.drawn += 1
            was_training = model.training
            model.eval()
            with torch.no_grad():
                keep = [bool(k) for k in keep_fn(model, self.collate(idx))]
            model.train(was_training)
            kept = [i for i, k in zip(idx, keep, strict=True) if k]
            self.dropped += len(idx) - len(kept)
            barren = 0 if kept else barren + 1
            self.pending += kept
        idx, self.pending = self.pending[: self.batch_size], self.pending[self.batch_size:]
        return self.epoch, self.collate(idx)


def _count_tokens(batch: dict) -> int:
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    return sum(int(p["attention_mask"].sum()) for p in batch.values() if isinstance(p, Mapping))


def _log(row: dict, history: list, metrics_file, accelerator, config: TrainConfig) -> None:
    history.append(row)
    if metrics_file is not None:
        metrics_file.write(dumps(row, indent=None) + "\n")
        metrics_file.flush()
    if config.report_to:
        accelerator.log({k: v for k, v in row.items() if k != "step"}, step=row["step"])


def _run_eval(eval_fn: EvalFn, accelerator, model, step: int, history: list, metrics_file, config) -> None:
    import torch

    inner = accelerator.unwrap_model(model)
    inner.eval()
    try:
        with torch.no_grad():
            values = eval_fn(inner, step) or {}
    finally:
        inner.train()
    if values and accelerator.is_main_process:
        row = {"step": step, **{f"eval_{k}": float(v) for k, v in values.items()}}
        _log(row, history, metrics_file, accelerator, config)


def _read_history(out: Path) -> list[dict]:
    import json

    path = out / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut off by the kill
            break
    return rows


# Settings that may change between a run and its resumption: where and how it reports and saves,
# and on which device it runs. Any other difference changes what the saved step means (data order,
# schedule, loss, model), so resuming with it would silently train a different run.
RESUME_FREE = frozenset({"resume", "progress", "report_to", "output_dir", "save_every", "keep_checkpoints",
                         "log_every", "eval_every", "save_final", "cpu", "ref_device"})


def _check_same_run(saved: dict, config: TrainConfig) -> None:
    """Refuse to resume with settings that differ from the checkpoint's (naming the field)."""
    import json

    now = json.loads(dumps(config.to_dict(), indent=None))
    for key in sorted(set(saved) | set(now)):
        if key in RESUME_FREE or key not in saved or key not in now:
            continue
        if saved[key] != now[key]:
            raise LlmgenError(f"cannot resume: checkpoint has {key}={saved[key]!r}, config has {now[key]!r} "
                              "(rerun with the checkpoint's value, or start a new run)")


def check_resume(config: TrainConfig) -> None:
    """Before any model loads: a resumed run must match its checkpoint's settings, and ``resume``
    on a finished run that kept no checkpoint is an error (starting over would replace it)."""
    if not config.resume:
        return
    out = Path(config.output_dir)
    found = ckpt.latest_checkpoint(out)
    if found is not None:
        _check_same_run(read_json(found / ckpt.STATE_FILE).get("config", {}), config)
    elif (out / "results.json").exists() or (out / "final").exists():
        raise LlmgenError(f"cannot resume: {out} holds a finished run and no checkpoint (use --save-every); "
                          "pass --overwrite to train it again from the start")


# What a run writes in its output folder, results first: a folder holding any of these holds a run.
RUN_FILES = ("results.json", "final", "metrics.jsonl", "config.json", "checkpoints")


# What a model save (``final/``) writes: in a folder no run marker covers, only these are removed.
_SAVED_MODEL_FILE = re.compile(r"(.*\.safetensors|.*\.bin|.*\.safetensors\.index\.json|tokenizer\.model|"
                               r"(config|generation_config|adapter_config|tokenizer|tokenizer_config|"
                               r"special_tokens_map|added_tokens|vocab|merges|chat_template)\.(json|txt|jinja))")


def clear_run(out: Path) -> None:
    """Remove an earlier run's outputs before a fresh start, results first, so that a kill at any
    point never leaves an old ``results.json``/``final/`` beside a new partial ``metrics.jsonl``:
    the files the run marker lists (``llmgen.io.clear_run``; a user's file in the folder stays). In
    a folder no marker covers (a library call), the results, the checkpoints and the model files
    of ``final/``, nothing else."""
    import shutil

    if io.clear_run(out):
        return
    (out / "results.json").unlink(missing_ok=True)
    final = out / "final"
    if final.is_dir():
        for f in final.iterdir():
            if f.is_file() and _SAVED_MODEL_FILE.fullmatch(f.name):
                f.unlink()
    for path in ckpt.list_checkpoints(out):
        shutil.rmtree(path)
    for folder in (final, ckpt.checkpoint_root(out)):
        try:
            folder.rmdir()  # only when nothing of the user's is left in it
        except OSError:
            pass


def _save_final(accelerator, model, tokenizer, out: Path) -> str:
    """``final/``: the full model + tokenizer, or the adapter (+ tokenizer) with LoRA."""
    import shutil

    unwrapped = accelerator.unwrap_model(model)
    state_dict = accelerator.get_state_dict(model)  # collective under FSDP/DeepSpeed
    final, tmp = out / "final", out / ".final.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        cfg = getattr(unwrapped, "config", None)
        if cfg is not None:
            cfg.use_cache = True  # inference wants the KV cache back
        unwrapped.save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
        if cfg is not None:
            cfg.use_cache = False
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        io.replace_folder(tmp, final)  # a user's file left in final/ is kept
    accelerator.wait_for_everyone()
    return str(final)


class _Progress:
    """A rich progress bar (step, loss, tokens/s) on the main process of an interactive run."""

    def __init__(self, total: int, done: int, enabled: bool) -> None:
        self.bar = None
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[tps]:.0f} tok/s"),
                            TimeRemainingColumn(), transient=False)
        self.task = self.bar.add_task("train", total=total, completed=done, loss=float("nan"), tps=0.0)
        self.bar.start()

    def update(self, step: int, loss: float, tps: float) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=step, loss=loss, tps=tps)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()

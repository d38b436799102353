"""Hyperfitting (Carlsson et al., ICLR 2025): overfit a pretrained LM on a few sequences to near-zero
training loss, and its long greedy continuations stop repeating.

The recipe trains through the shared loop (``llmgen.training``, plain-text data, loss on every
token) and compares three generators on 32-token prompts cut from held-out sequences: the base
model greedy, the base model with top-p sampling, and the hyperfitted model greedy (optionally
also with the "citation blocker", which forbids completing any 5-gram of the training set).

Generation goes through the runner's request path (``llmgen.evaluate.run_requests``: ``generate``
requests to ``HFBackend`` over the in-memory model behind ``CachedBackend``, with ``requests.sqlite``
in the run folder, so a rerun finds its continuations): prompts are ``TokenPrompt``s (token-id prefixes of held-out text, never re-tokenised),
continuations run to a fixed length past EOS (``ignore_eos``), as in the paper, and carry the entropy
of the *full* next-token distribution at every step (``return_entropy``, the paper's confidence
measure); the citation blocker is ``block_ngrams``. Only the HF backend has all three.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from llmgen.backends import backend_on_model
from llmgen.backends.base import Completion, NgramBlock, SamplingConfig, TokenPrompt
from llmgen.cache import RequestCache
from llmgen.config import EvalSettings, check_fixed, dump_config
from llmgen.errors import LlmgenError
from llmgen.evals.generation import (
    distinct_n,
    longest_repeated_loop,
    ngram_overlap,
    ngram_set,
    perplexity,
    repetition_rate,
    self_bleu,
    type_token_ratio,
)
from llmgen.training.config import TrainConfig

TTR_EOS = ("pad", "ignore")


@dataclass
class HyperfittingConfig:
    """One hyperfitting run. Defaults are the paper's; scale down through the fields, not the code.

    ``num_prompts`` held-out sequences give the prompts (their first ``prompt_len`` tokens) and the
    held-out perplexity. ``eval_every`` epochs the hyperfitted model is measured on the first
    ``epoch_eval_prompts`` prompts with ``epoch_eval_len``-token continuations (cheaper than the
    final evaluation, enough to draw TTR and entropy against epochs).

    ``split="document"`` (the paper's) takes one sequence per document, so held-out prompts are
    document starts no training sequence comes from; ``"stream"`` cuts the concatenated documents
    into chunks (more sequences from a source of short documents such as ``stdlib``, but a held-out
    chunk can continue a training chunk).
    """

    model: str = "default"
    text_source: str = "stdlib"
    text_field: str = "text"
    split: str = "document"  # the paper's: first seq_len tokens of each document; "stream": chunks of one stream
    pool_tokens: int | None = None  # split "stream": draw chunks at random from this many tokens (None: the first)
    num_sequences: int = 2000
    seq_len: int = 256
    num_prompts: int = 64
    prompt_len: int = 32

    # the paper's 20 epochs, lr 1e-6, batch 8, constant lr, full fine-tuning; the optimiser as the
    # reference code runs it (start_hyperfitting.py: AdamW(model.parameters(), lr), so weight decay
    # 0.01, PyTorch's default; training.py: no gradient clipping)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        lr=1e-6, epochs=20.0, batch_size=8, schedule="constant", weight_decay=0.01, max_grad_norm=None,
        save_final=False))
    # eval.max_new_tokens tokens per continuation: the reference generates up to the sequence length
    # (validation.py: max_length = seq_len, so 256 - 32 = 224 new tokens); eval.top_p and
    # eval.temperature are the sampling baseline's (the other generators are greedy)
    eval: EvalSettings = field(default_factory=lambda: EvalSettings(max_new_tokens=224, top_p=0.9, temperature=1.0))
    citation_blocker: bool = False
    block_n: int = 5
    ttr_window: int = 96
    # TTR's window: "pad" (the reference's: a continuation that ends at EOS is EOS-padded to its full
    # length, and the window, its last ttr_window tokens, counts the padding); "ignore": the tokens
    # generated past EOS (every metric but TTR always reads those)
    ttr_eos: str = "pad"
    repetition_n: int = 4
    distinct_n: int = 2
    overlap_n: int = 5

    eval_every: int = 1
    epoch_eval_prompts: int = 16
    epoch_eval_len: int | None = None  # None = eval.max_new_tokens
    gen_batch_size: int = 8
    device: str = "cpu"
    output_dir: str = "runs/hyperfitting"
    save_model: bool = False
    progress: bool = True

    # Set by the recipe: plain-text sequences of seq_len tokens, the ce loss, per-epoch measurements,
    # one train/ folder; generation is the HF backend (gen_batch_size requests a batch), greedy or one sample.
    FIXED_KEYS: ClassVar[tuple[str, ...]] = (
        *(f"train.{n}" for n in ("model", "data", "data_format", "prompt_field", "answer_field", "text_field",
                                 "split", "max_length", "loss", "loss_args", "eval_every", "output_dir", "resume",
                                 "progress", "save_final")),
        "eval.backend", "eval.num_samples", "eval.limit", "eval.batch_size")

    def validate(self) -> None:
        """Check every value before loading a model or writing a file."""
        check_fixed(self)
        self.train.validate()
        self.eval.validate(task_budget=False)  # its own generation loop: eval.max_new_tokens steps
        positive = ("num_sequences", "seq_len", "num_prompts", "prompt_len", "block_n", "ttr_window", "repetition_n", "distinct_n", "overlap_n", "eval_every",
                    "epoch_eval_prompts", "gen_batch_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise LlmgenError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.prompt_len >= self.seq_len:
            raise LlmgenError(f"prompt_len ({self.prompt_len}) must be shorter than seq_len ({self.seq_len})")
        if self.num_prompts < 2:
            raise LlmgenError(f"num_prompts must be at least 2 (self-BLEU compares continuations), got {self.num_prompts}")
        if self.pool_tokens is not None and self.pool_tokens < 1:
            raise LlmgenError(f"pool_tokens must be at least 1 (or None), got {self.pool_tokens}")
        if self.ttr_eos not in TTR_EOS:
            raise LlmgenError(f"ttr_eos must be one of {', '.join(TTR_EOS)}, got {self.ttr_eos!r}")
        if self.split not in ("document", "stream"):
            raise LlmgenError(f"unknown split {self.split!r} (use document or stream)")
        if self.split == "document" and self.pool_tokens is not None:
            raise LlmgenError("pool_tokens draws chunks of one token stream: it needs split 'stream'")
        if self.eval.temperature <= 0:
            raise LlmgenError(f"the top-p baseline needs eval.temperature > 0, got {self.eval.temperature}")
        if self.epoch_eval_len is not None and self.epoch_eval_len < 1:
            raise LlmgenError(f"epoch_eval_len must be at least 1, got {self.epoch_eval_len}")


# --- generation through the backend -------------------------------------------------------------


@contextmanager
def evaluating(model) -> Iterator[None]:
    """``model.eval()`` for a measurement, the training mode restored after (it runs mid-training)."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def continuation_sampling(length: int, *, top_p: float | None = None, temperature: float = 1.0, seed: int = 0,
                          block: NgramBlock | None = None) -> SamplingConfig:
    """The paper's continuations: exactly ``length`` tokens (EOS ignored) with each step's entropy;
    greedy, or top-p sampling where ``top_p`` is given. Entropy and logprob are those of the model's
    own distribution (temperature 1, before top-p or the block), which is what the paper reports."""
    if top_p is None:
        return SamplingConfig(max_tokens=length, ignore_eos=True, return_entropy=True, block_ngrams=block)
    return SamplingConfig(temperature=temperature, top_p=top_p, max_tokens=length, seed=seed, ignore_eos=True,
                          return_entropy=True, block_ngrams=block)


def continue_prompts(model, tokenizer, prompts: Sequence[Sequence[int]], sampling: SamplingConfig,
                     cache: RequestCache, batch_size: int = 8) -> list[Completion]:
    """One completion per token prompt, from the model as it is now (a new backend each call: its
    content fingerprint is a snapshot of the weights, which training changes)."""
    from llmgen.evaluate import run_requests
    from llmgen.tasks import Request

    if not prompts:
        raise LlmgenError("no prompts to continue")
    backend = backend_on_model("hf", model, tokenizer, None, dtype="float32", label="in-memory:hyperfitting",
                               batch_size=batch_size)
    requests = [Request("generate", TokenPrompt(p), sampling=sampling) for p in prompts]
    with evaluating(model):
        return [c[0] for c in run_requests(backend, requests, cache)]  # the runner's request path (cached)


def heldout_scores(model, sequences: Sequence[Sequence[int]], batch_size: int = 8) -> tuple[list[float], list[float]]:
    """Teacher forcing on held-out sequences: ``(next-token logprobs, predictive entropies)``.

    The logprobs give the held-out perplexity. The entropies (nats) are those of the model's
    distribution at every position of the held-out text, the quantity the paper reports
    (FreddeFrallan/Hyperfitting ``src/validation.py``, ``_validate_model_perplexity``, which
    averages them over positions and batches; it adds 1e-9 inside the log, this is exact)."""
    import torch

    device = next(model.parameters()).device
    logprobs: list[float] = []
    entropies: list[float] = []
    with evaluating(model), torch.no_grad():
        for b in range(0, len(sequences), batch_size):
            ids = torch.tensor([list(s) for s in sequences[b : b + batch_size]], dtype=torch.long, device=device)
            logp = torch.log_softmax(model(input_ids=ids).logits.float(), dim=-1)
            logprobs += logp[:, :-1].gather(-1, ids[:, 1:, None]).flatten().tolist()
            p = logp.exp()  # -Σ p log p per position, 0·log 0 = 0
            entropies += (-(p * logp.masked_fill(p == 0, 0.0)).sum(-1)).flatten().tolist()
    return logprobs, entropies


def heldout_point(model, sequences: Sequence[Sequence[int]], batch_size: int) -> dict[str, float]:
    """Held-out perplexity and mean teacher-forced predictive entropy of ``model``."""
    import numpy as np

    logprobs, entropies = heldout_scores(model, sequences, batch_size)
    return {"heldout_perplexity": perplexity(logprobs), "heldout_entropy": float(np.mean(entropies))}


# --- metrics -------------------------------------------------------------------------------------


def ttr_window_tokens(tokens: Sequence[int], eos_id: int | None, mode: str = "pad") -> list[int]:
    """The tokens TTR's window is cut from. ``"pad"``: as the reference's ``model.generate`` returns a
    continuation (``pad_token_id = eos``): up to and including its first EOS, then EOS to the same
    length (a continuation generated past EOS is greedy-identical up to it); ``"ignore"``: as generated."""
    toks = list(tokens)
    if mode == "ignore" or eos_id is None or eos_id not in toks:
        return toks
    cut = toks.index(eos_id)
    return toks[:cut] + [eos_id] * (len(toks) - cut)


def reference_ttr(tokens: Sequence[int], eos_id: int | None, config: HyperfittingConfig) -> float:
    """validation.py ``_generation_validation``: distinct / all of the last ``ttr_window`` tokens."""
    return type_token_ratio(ttr_window_tokens(tokens, eos_id, config.ttr_eos), config.ttr_window)


def generation_metrics(gens: Sequence[Completion], tokenizer, train_ngrams: set[tuple],
                       config: HyperfittingConfig) -> dict:
    """Every metric of the paper for one generator (one completion per prompt), averaged over prompts."""
    import numpy as np

    ids = [c.token_ids for c in gens]
    texts = [tokenizer.decode(t, skip_special_tokens=True) for t in ids]
    per = lambda f: float(np.mean([f(t) for t in ids]))  # noqa: E731
    return {
        "ttr": per(lambda t: reference_ttr(t, tokenizer.eos_token_id, config)),
        f"distinct_{config.distinct_n}": distinct_n(ids, config.distinct_n),
        "self_bleu": self_bleu(texts) if len(texts) > 1 else float("nan"),
        "repetition_rate": per(lambda t: repetition_rate(t, config.repetition_n)),
        "longest_loop": per(longest_repeated_loop),
        "entropy": float(np.mean([e for c in gens for e in c.entropies or ()])),  # on its own continuation
        "train_overlap": per(lambda t: ngram_overlap(t, train_ngrams, config.overlap_n)),
        "generated_perplexity": perplexity(lp for c in gens for lp in c.logprobs),
    }


# --- the run -------------------------------------------------------------------------------------

GENERATORS = ("base_greedy", "base_top_p", "hyperfitted_greedy", "hyperfitted_greedy_blocked")


def run(config: HyperfittingConfig) -> dict:
    """Train to near-zero loss, compare generators, write the run folder; returns ``results``."""
    import torch

    from llmgen.io import atomic_write_json
    from llmgen.models import load_model
    from llmgen.recipes.hyperfitting.text_sources import chunk_documents, document_sequences, iter_documents

    config.validate()
    torch.manual_seed(config.train.seed)
    out = Path(config.output_dir)
    started = time.time()
    model, tok = load_model(config.model, dtype=config.train.model_dtype, device=config.device)
    documents = iter_documents(config.text_source, config.text_field)
    if config.split == "document":
        chunks = document_sequences(documents, tok, config.seq_len, config.num_sequences, config.num_prompts)
    else:
        chunks = chunk_documents(documents, tok, config.seq_len, config.num_sequences, config.num_prompts,
                                 seed=config.train.seed, pool_tokens=config.pool_tokens)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "config.json", dump_config(config))
    cache = RequestCache(out / "requests.sqlite")  # a rerun of this run folder finds its continuations
    try:
        results = _compare(config, model, tok, chunks, cache, out, started)
    finally:
        cache.close()
    if config.save_model:
        model.save_pretrained(out / "model", safe_serialization=True)
        tok.save_pretrained(out / "model")
    return results


def _compare(config: HyperfittingConfig, model, tok, chunks, cache: RequestCache, out: Path, started: float) -> dict:
    """The base model's generators, hyperfitting with per-epoch points, the hyperfitted model's
    generators; writes samples.jsonl, results.json and the plots."""
    from llmgen.io import atomic_write_json, atomic_write_jsonl

    prompts = [s[: config.prompt_len] for s in chunks.heldout]
    train_ngrams = ngram_set(chunks.train, config.overlap_n)
    epoch_prompts = prompts[: config.epoch_eval_prompts]
    epoch_len = config.epoch_eval_len or config.eval.max_new_tokens
    full = continuation_sampling(config.eval.max_new_tokens)

    def continuations(m, prompt_set, sampling: SamplingConfig) -> list[Completion]:
        return continue_prompts(m, tok, prompt_set, sampling, cache, config.gen_batch_size)

    def epoch_point(m, epoch: int, train_loss: float | None, heldout: dict[str, float] | None = None) -> dict:
        # the same request as a final generator's when the settings agree: the cache answers it once
        gens = continuations(m, epoch_prompts, continuation_sampling(epoch_len))
        metrics = generation_metrics(gens, tok, train_ngrams, config) if len(epoch_prompts) > 1 else {}
        heldout = heldout or heldout_point(m, chunks.heldout, config.gen_batch_size)
        point = {"epoch": epoch, "train_loss": train_loss, **metrics, **heldout}
        _log(config, f"epoch {epoch}: " + ", ".join(f"{k} {v:.4g}" for k, v in point.items()
                                                       if isinstance(v, float)))
        return point

    # The base model, before any training.
    _log(config, f"base model: {len(prompts)} prompts x {config.eval.max_new_tokens} tokens")
    base_heldout = heldout_point(model, chunks.heldout, config.gen_batch_size)
    top_p = continuation_sampling(config.eval.max_new_tokens, top_p=config.eval.top_p,
                                  temperature=config.eval.temperature, seed=config.train.seed)
    gens = {"base_greedy": continuations(model, prompts, full), "base_top_p": continuations(model, prompts, top_p)}
    epochs = [epoch_point(model, 0, None, base_heldout)]

    # Hyperfitting through the shared training loop, measured every `eval_every` epochs.
    train_log, model = _hyperfit(config, model, tok, chunks.train, out, epochs, epoch_point)
    # The loop always measures after its last step, so the last point's held-out numbers are the final model's.
    if epochs[-1].get("step") != train_log["steps"]:
        raise RuntimeError("the training loop skipped its final evaluation")
    hf_heldout = {k: epochs[-1][k] for k in base_heldout}
    gens["hyperfitted_greedy"] = continuations(model, prompts, full)
    if config.citation_blocker:
        blocked = continuation_sampling(config.eval.max_new_tokens, block=NgramBlock(chunks.train, config.block_n))
        gens["hyperfitted_greedy_blocked"] = continuations(model, prompts, blocked)

    generators = {}
    for name, g in gens.items():
        heldout = base_heldout if name.startswith("base") else hf_heldout
        generators[name] = {**generation_metrics(g, tok, train_ngrams, config), **heldout}
    rows = _samples(tok, prompts, chunks.heldout, gens, train_ngrams, config)
    extra = {
        "paper": "Carlsson et al., The Hyperfitting Phenomenon (ICLR 2025)",
        "data": {"source": config.text_source, "split": config.split, "train_sequences": len(chunks.train),
                 "seq_len": config.seq_len,
                 "heldout_sequences": len(chunks.heldout), "tokens_read": chunks.total_tokens},
        "generators": generators,
        "epochs": epochs,
        "train": train_log,
        "seconds": round(time.time() - started, 1),
    }
    extra["plots"] = _plots(out, epochs, train_log)
    results = _record(config, generators, rows, extra, started, cache)
    atomic_write_jsonl(out / "samples.jsonl", rows)
    atomic_write_json(out / "results.json", results)
    return results


def _log(config: HyperfittingConfig, msg: str) -> None:
    if config.progress:
        print(f"[hyperfit] {msg}", file=sys.stderr, flush=True)


ROW_METRICS = ("ttr", "repetition_rate", "longest_loop", "entropy", "train_overlap")  # per continuation


def _row_metrics(c: Completion, train_ngrams: set[tuple], config: HyperfittingConfig,
                 eos_id: int | None) -> dict[str, float]:
    """One continuation's values of the per-continuation metrics (``generation_metrics`` averages them)."""
    import numpy as np

    t = c.token_ids
    return {"ttr": reference_ttr(t, eos_id, config), "repetition_rate": repetition_rate(t, config.repetition_n),
            "longest_loop": float(longest_repeated_loop(t)), "entropy": float(np.mean(c.entropies)),
            "train_overlap": ngram_overlap(t, train_ngrams, config.overlap_n)}


def _samples(tok, prompts, heldout, gens: dict[str, list[Completion]], train_ngrams: set[tuple],
             config: HyperfittingConfig) -> list[dict]:
    """One row per generator and prompt in the one samples schema (``task`` = the generator)."""
    rows = []
    for name, g in gens.items():
        for i, prompt in enumerate(prompts):
            rows.append({"task": name, "doc_id": i, "prompt": tok.decode(prompt, skip_special_tokens=True),
                         "target": tok.decode(heldout[i][config.prompt_len:], skip_special_tokens=True),
                         "responses": [tok.decode(g[i].token_ids, skip_special_tokens=True)],
                         "metrics": _row_metrics(g[i], train_ngrams, config, tok.eos_token_id)})
    return rows


def _record(config: HyperfittingConfig, generators: dict[str, dict], rows: list[dict], extra: dict,
            started: float, cache: RequestCache) -> dict:
    """results.json in the one schema: each generator is an evaluation of the held-out prompts; the
    teacher-forced held-out perplexity/entropy (a training-side measurement) sit in its metrics."""
    from llmgen.evaluate import uncertainty
    from llmgen.results import results_record

    by = {name: [r for r in rows if r["task"] == name] for name in generators}
    metrics = {name: {m: (None if isinstance(v, float) and math.isnan(v) else v) for m, v in g.items()}
               for name, g in generators.items()}
    return results_record(
        config=dump_config(config), model=config.model,
        backend={"name": "hf", "model": config.model, "dtype": config.train.model_dtype},
        seed=config.train.seed, timings={"total_s": round(time.time() - started, 2)}, results=metrics,
        cache={"hits": cache.hits, "misses": cache.misses, "path": str(cache.path)},
        uncertainty={n: {m: uncertainty(by[n], m, config.train.seed) for m in ROW_METRICS} for n in generators},
        n_samples={n: len(by[n]) for n in generators},
        tasks={n: {"name": n, "output_type": "generate", "metrics": list(metrics[n]), "num_examples": len(by[n]),
                   "description": f"{config.eval.max_new_tokens}-token continuations of held-out prompts"} for n in generators},
        extra=extra)


def _plots(out: Path, epochs: list[dict], train_log: dict) -> dict[str, str]:
    """TTR and entropy against epoch, and the training loss curve (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = {}
    xs = [e["epoch"] for e in epochs]
    fig, ax1 = plt.subplots(figsize=(6, 4))
    if "ttr" in epochs[0]:
        ax1.plot(xs, [e["ttr"] for e in epochs], "o-", color="tab:blue", label="greedy TTR (last W tokens)")
        ax1.set_ylabel("type-token ratio", color="tab:blue")
        ax2 = ax1.twinx()
        ax2.plot(xs, [e["entropy"] for e in epochs], "s--", color="tab:red", label="entropy, own greedy text")
        ax2.plot(xs, [e["heldout_entropy"] for e in epochs], "^:", color="tab:purple",
                 label="entropy, held-out text (teacher forced)")
        ax2.set_ylabel("mean predictive entropy (nats)", color="tab:red")
        ax2.legend(fontsize=8, loc="lower right")
    ax1.set_xlabel("epoch")
    ax1.set_title("Hyperfitting: greedy TTR and entropy vs epoch")
    fig.tight_layout()
    paths["ttr_entropy"] = str(out / "ttr_entropy_vs_epoch.png")
    fig.savefig(paths["ttr_entropy"], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    steps = train_log.get("step_losses", [])
    if steps:
        ax.plot([s for s, _ in steps], [v for _, v in steps], lw=1, label="per step")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (nats/token)")
    ax.set_yscale("log")
    ax.set_title("Hyperfitting: training loss")
    fig.tight_layout()
    paths["loss"] = str(out / "loss.png")
    fig.savefig(paths["loss"], dpi=120)
    plt.close(fig)
    return paths


def _hyperfit(config: HyperfittingConfig, model, tok, train_seqs: list[list[int]], out: Path,
              epochs: list[dict], epoch_point) -> tuple[dict, Any]:
    """Train with the shared loop (loss on every token); returns (training log, trained model).

    ``epoch_point(model, epoch, loss)`` measures the model every ``eval_every`` epochs.
    The loop calls its ``eval_fn`` every N optimizer steps; one epoch is ``ceil(sequences / batch)``
    steps, so N = that times ``eval_every``. The mean training loss of the epoch just finished is
    read from the loop's ``metrics.jsonl``, which it flushes every step.
    """
    from llmgen.io import read_jsonl
    from llmgen.training import train

    steps_per_epoch = math.ceil(len(train_seqs) / (config.train.batch_size * config.train.grad_accum))
    train_dir = out / "train"
    tcfg = replace(config.train, loss="ce", max_length=config.seq_len, eval_every=steps_per_epoch * config.eval_every,
                   output_dir=str(train_dir), save_final=False, progress=False)
    features = [{"input_ids": list(s), "labels": list(s)} for s in train_seqs]

    def eval_fn(trained, step: int) -> dict[str, float]:
        rows = read_jsonl(train_dir / "metrics.jsonl", allow_empty=True)
        recent = [r["loss"] for r in rows if "loss" in r and step - steps_per_epoch < r["step"] <= step]
        point = epoch_point(trained, math.ceil(step / steps_per_epoch), sum(recent) / len(recent) if recent else None)
        point["step"] = step
        epochs.append(point)
        return {k: v for k, v in point.items() if isinstance(v, float)}

    result = train(tcfg, model=model, tokenizer=tok, train_dataset=features, eval_fn=eval_fn)
    losses = [(r["step"], r["loss"]) for r in result.history if "loss" in r]
    per_epoch = [[loss for s, loss in losses if e * steps_per_epoch < s <= (e + 1) * steps_per_epoch]
                 for e in range(math.ceil(result.steps / steps_per_epoch))]
    log = {"final_loss": result.final_loss, "epoch_losses": [sum(v) / len(v) for v in per_epoch if v], "steps": result.steps, "steps_per_epoch": steps_per_epoch,
            "train_seconds": round(result.train_seconds, 1), "tokens_per_s": round(result.tokens_per_s, 1),
            "trainable_params": result.trainable_params,
            "step_losses": losses}
    return log, result.model

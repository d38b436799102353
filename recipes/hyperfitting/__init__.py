"""Hyperfitting (Carlsson et al., ICLR 2025): overfit a pretrained LM on a few sequences to near-zero
training loss, and its long greedy continuations stop repeating.

The recipe trains through the shared loop (``llmgen.training``, plain-text data, loss on every
token) and compares three generators on 32-token prompts cut from held-out sequences: the base
model greedy, the base model with top-p sampling, and the hyperfitted model greedy (optionally
also with the "citation blocker", which forbids completing any 5-gram of the training set).

Generation is a hand-written loop over HF with a KV cache rather than a backend call, because the
paper's confidence measure needs the *full* next-token distribution at every step (its entropy),
which neither ``generate`` outputs nor vLLM's top-k logprobs give cheaply. Continuations run to a
fixed length and do not stop at EOS, as in the paper.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

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
    token_entropies,
    type_token_ratio,
)
from llmgen.training.config import TrainConfig


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

    # the paper's: 20 epochs, Adam lr 1e-6, no weight decay, batch 8, constant lr; full fine-tuning
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        lr=1e-6, epochs=20.0, batch_size=8, schedule="constant", weight_decay=0.0, max_grad_norm=1.0,
        save_final=False))
    # eval.max_new_tokens tokens per continuation (fixed length, no EOS stop); eval.top_p and
    # eval.temperature are the sampling baseline's (the other generators are greedy)
    eval: EvalSettings = field(default_factory=lambda: EvalSettings(max_new_tokens=256, top_p=0.9, temperature=1.0))
    citation_blocker: bool = False
    block_n: int = 5
    ttr_window: int = 96
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
    # one train/ folder; generation is a hand-written HF loop (gen_batch_size), greedy or one sample.
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
        if self.split not in ("document", "stream"):
            raise LlmgenError(f"unknown split {self.split!r} (use document or stream)")
        if self.split == "document" and self.pool_tokens is not None:
            raise LlmgenError("pool_tokens draws chunks of one token stream: it needs split 'stream'")
        if self.eval.temperature <= 0:
            raise LlmgenError(f"the top-p baseline needs eval.temperature > 0, got {self.eval.temperature}")
        if self.epoch_eval_len is not None and self.epoch_eval_len < 1:
            raise LlmgenError(f"epoch_eval_len must be at least 1, got {self.epoch_eval_len}")


# --- the citation blocker ------------------------------------------------------------------------


class CitationBlocker:
    """Forbid any next token that would complete an n-gram (default 5) of the training data.

    Callable like an HF ``LogitsProcessor`` (``(input_ids [B, T], scores [B, V]) -> scores``), so it
    also plugs into ``model.generate(logits_processor=[...])``. The context is the last n - 1 token
    ids of prompt + continuation so far; blocked candidates get ``-inf``.
    """

    def __init__(self, sequences: Sequence[Sequence[int]], n: int = 5) -> None:
        if n < 2:
            raise LlmgenError(f"the citation blocker needs n >= 2, got {n}")
        self.n = n
        self.next_tokens: dict[tuple[int, ...], set[int]] = {}
        for gram in ngram_set(sequences, n):
            self.next_tokens.setdefault(gram[:-1], set()).add(gram[-1])

    def blocked(self, context: Sequence[int]) -> set[int]:
        """Token ids that may not follow ``context``."""
        if len(context) < self.n - 1:
            return set()
        return self.next_tokens.get(tuple(context[len(context) - self.n + 1:]), set())

    def __call__(self, input_ids, scores):
        for row, ids in enumerate(input_ids.tolist()):
            ban = self.blocked(ids)
            if ban:
                scores[row, sorted(ban)] = -math.inf
        return scores


# --- generation with full distributions ----------------------------------------------------------


@dataclass
class Generations:
    """Continuations of a batch of prompts: ids, raw-model logprob and entropy of every step."""

    token_ids: list[list[int]]
    logprobs: list[list[float]]
    entropies: list[list[float]]

    def head(self, prompts: int, tokens: int) -> Generations:
        """The first ``tokens`` steps of the first ``prompts`` continuations."""
        return Generations(*([row[:tokens] for row in rows[:prompts]]
                             for rows in (self.token_ids, self.logprobs, self.entropies)))


def generate(model, prompts: Sequence[Sequence[int]], max_new_tokens: int, *, greedy: bool = True,
             top_p: float = 1.0, temperature: float = 1.0, seed: int = 0, blocker: CitationBlocker | None = None,
             batch_size: int = 8) -> Generations:
    """Continue equal-length token prompts for exactly ``max_new_tokens`` steps.

    Entropy and logprob are those of the model's own distribution (temperature 1, before top-p
    or the blocker), which is what the paper reports. Sampling uses one ``torch.Generator`` per
    batch seeded from ``seed`` and the batch index, so results do not depend on what ran before.
    """
    import torch

    if not prompts:
        raise LlmgenError("no prompts to continue")
    if len({len(p) for p in prompts}) != 1 or not prompts[0]:
        raise LlmgenError("prompts must be non-empty and all of the same length (cut from token sequences)")
    device = next(model.parameters()).device
    out = Generations([], [], [])
    was_training = model.training
    model.eval()
    try:
        for b in range(0, len(prompts), batch_size):
            ids = torch.tensor([list(p) for p in prompts[b : b + batch_size]], dtype=torch.long, device=device)
            gen = torch.Generator(device="cpu").manual_seed(seed * 1_000_003 + b)
            new, lps, ents = _generate_batch(model, ids, max_new_tokens, greedy, top_p, temperature, gen, blocker)
            out.token_ids += new
            out.logprobs += lps
            out.entropies += ents
    finally:
        model.train(was_training)
    return out


def _generate_batch(model, ids, steps, greedy, top_p, temperature, gen, blocker):
    import torch

    context = ids
    past = None
    cur = ids
    new_tokens, logprobs, entropies = [], [], []
    with torch.no_grad():
        for _ in range(steps):
            out = model(input_ids=cur, past_key_values=past, use_cache=True)
            past = out.past_key_values
            logits = out.logits[:, -1, :].float()
            logp = torch.log_softmax(logits, dim=-1)
            entropies.append(torch.as_tensor(token_entropies(logp.cpu().numpy())))
            scores = logits.clone()
            if blocker is not None:
                scores = blocker(context, scores)
            if greedy:
                nxt = scores.argmax(dim=-1)
            else:
                nxt = _sample_top_p(scores / temperature, top_p, gen).to(scores.device)
            logprobs.append(logp.gather(1, nxt[:, None])[:, 0])
            new_tokens.append(nxt)
            cur = nxt[:, None]
            context = torch.cat([context, cur], dim=1)
    return (torch.stack(new_tokens, 1).tolist(), torch.stack(logprobs, 1).tolist(),
            torch.stack(entropies, 1).tolist())


def _sample_top_p(scores, top_p: float, gen):
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches ``top_p``."""
    import torch

    probs = torch.softmax(scores.cpu(), dim=-1)
    sorted_p, order = probs.sort(dim=-1, descending=True)
    keep = sorted_p.cumsum(-1) - sorted_p < top_p  # always keeps the top token
    sorted_p = torch.where(keep, sorted_p, torch.zeros_like(sorted_p))
    pick = torch.multinomial(sorted_p, 1, generator=gen)
    return order.gather(1, pick)[:, 0]


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
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for b in range(0, len(sequences), batch_size):
                ids = torch.tensor([list(s) for s in sequences[b : b + batch_size]], dtype=torch.long, device=device)
                logp = torch.log_softmax(model(input_ids=ids).logits.float(), dim=-1)
                logprobs += logp[:, :-1].gather(-1, ids[:, 1:, None]).flatten().tolist()
                p = logp.exp()  # -Σ p log p per position, 0·log 0 = 0
                entropies += (-(p * logp.masked_fill(p == 0, 0.0)).sum(-1)).flatten().tolist()
    finally:
        model.train(was_training)
    return logprobs, entropies


def heldout_point(model, sequences: Sequence[Sequence[int]], batch_size: int) -> dict[str, float]:
    """Held-out perplexity and mean teacher-forced predictive entropy of ``model``."""
    import numpy as np

    logprobs, entropies = heldout_scores(model, sequences, batch_size)
    return {"heldout_perplexity": perplexity(logprobs), "heldout_entropy": float(np.mean(entropies))}


# --- metrics -------------------------------------------------------------------------------------


def generation_metrics(gens: Generations, tokenizer, train_ngrams: set[tuple], config: HyperfittingConfig) -> dict:
    """Every metric of the paper for one generator, averaged over prompts."""
    import numpy as np

    texts = [tokenizer.decode(t, skip_special_tokens=True) for t in gens.token_ids]
    per = lambda f: float(np.mean([f(t) for t in gens.token_ids]))  # noqa: E731
    return {
        "ttr": per(lambda t: type_token_ratio(t, config.ttr_window)),
        f"distinct_{config.distinct_n}": distinct_n(gens.token_ids, config.distinct_n),
        "self_bleu": self_bleu(texts) if len(texts) > 1 else float("nan"),
        "repetition_rate": per(lambda t: repetition_rate(t, config.repetition_n)),
        "longest_loop": per(longest_repeated_loop),
        "entropy": float(np.mean([e for row in gens.entropies for e in row])),  # on its own continuation
        "train_overlap": per(lambda t: ngram_overlap(t, train_ngrams, config.overlap_n)),
        "generated_perplexity": perplexity(lp for row in gens.logprobs for lp in row),
    }


# --- the run -------------------------------------------------------------------------------------

GENERATORS = ("base_greedy", "base_top_p", "hyperfitted_greedy", "hyperfitted_greedy_blocked")


def run(config: HyperfittingConfig) -> dict:
    """Train to near-zero loss, compare generators, write the run folder; returns ``results``."""
    import torch

    from llmgen.io import atomic_write_json, atomic_write_jsonl
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

    prompts = [s[: config.prompt_len] for s in chunks.heldout]
    train_ngrams = ngram_set(chunks.train, config.overlap_n)
    blocker = CitationBlocker(chunks.train, config.block_n) if config.citation_blocker else None
    epoch_prompts = prompts[: config.epoch_eval_prompts]
    epoch_len = config.epoch_eval_len or config.eval.max_new_tokens
    last_gens: list[Generations] = []  # the latest per-epoch generations

    def greedy(m, prompt_set, length, block=None) -> Generations:
        return generate(m, prompt_set, length, blocker=block, batch_size=config.gen_batch_size)

    def epoch_point(m, epoch: int, train_loss: float | None, gens: Generations | None = None,
                    heldout: dict[str, float] | None = None) -> dict:
        gens = gens or greedy(m, epoch_prompts, epoch_len)
        last_gens[:] = [gens]
        metrics = generation_metrics(gens, tok, train_ngrams, config) if len(epoch_prompts) > 1 else {}
        heldout = heldout or heldout_point(m, chunks.heldout, config.gen_batch_size)
        point = {"epoch": epoch, "train_loss": train_loss, **metrics, **heldout}
        _log(config, f"epoch {epoch}: " + ", ".join(f"{k} {v:.4g}" for k, v in point.items()
                                                       if isinstance(v, float)))
        return point

    # The base model, before any training.
    _log(config, f"base model: {len(prompts)} prompts x {config.eval.max_new_tokens} tokens")
    base_heldout = heldout_point(model, chunks.heldout, config.gen_batch_size)
    gens = {"base_greedy": greedy(model, prompts, config.eval.max_new_tokens),
            "base_top_p": generate(model, prompts, config.eval.max_new_tokens, greedy=False, top_p=config.eval.top_p,
                                   temperature=config.eval.temperature, seed=config.train.seed,
                                   batch_size=config.gen_batch_size)}
    # Greedy decoding is prefix-consistent, so epoch 0 is a slice of the base greedy run.
    epochs = [epoch_point(model, 0, None, gens["base_greedy"].head(len(epoch_prompts), epoch_len), base_heldout)]

    # Hyperfitting through the shared training loop, measured every `eval_every` epochs.
    train_log, model = _hyperfit(config, model, tok, chunks.train, out, epochs, epoch_point)
    # The loop always measures after its last step, so the last point's held-out numbers are the final model's.
    if epochs[-1].get("step") != train_log["steps"]:
        raise RuntimeError("the training loop skipped its final evaluation")
    hf_heldout = {k: epochs[-1][k] for k in base_heldout}
    # When the last per-epoch measurement covered every prompt at full length, it is the final run.
    same = epoch_len == config.eval.max_new_tokens and len(epoch_prompts) == len(prompts)
    gens["hyperfitted_greedy"] = last_gens[0] if same and last_gens else greedy(model, prompts, config.eval.max_new_tokens)
    if blocker is not None:
        gens["hyperfitted_greedy_blocked"] = greedy(model, prompts, config.eval.max_new_tokens, blocker)

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
    results = _record(config, generators, rows, extra, started)
    atomic_write_jsonl(out / "samples.jsonl", rows)
    atomic_write_json(out / "results.json", results)
    if config.save_model:
        model.save_pretrained(out / "model", safe_serialization=True)
        tok.save_pretrained(out / "model")
    return results


def _log(config: HyperfittingConfig, msg: str) -> None:
    if config.progress:
        print(f"[hyperfit] {msg}", file=sys.stderr, flush=True)


ROW_METRICS = ("ttr", "repetition_rate", "longest_loop", "entropy", "train_overlap")  # per continuation


def _row_metrics(g: Generations, i: int, train_ngrams: set[tuple], config: HyperfittingConfig) -> dict[str, float]:
    """One continuation's values of the per-continuation metrics (``generation_metrics`` averages them)."""
    import numpy as np

    t = g.token_ids[i]
    return {"ttr": type_token_ratio(t, config.ttr_window), "repetition_rate": repetition_rate(t, config.repetition_n),
            "longest_loop": float(longest_repeated_loop(t)), "entropy": float(np.mean(g.entropies[i])),
            "train_overlap": ngram_overlap(t, train_ngrams, config.overlap_n)}


def _samples(tok, prompts, heldout, gens: dict[str, Generations], train_ngrams: set[tuple],
             config: HyperfittingConfig) -> list[dict]:
    """One row per generator and prompt in the one samples schema (``task`` = the generator)."""
    rows = []
    for name, g in gens.items():
        for i, prompt in enumerate(prompts):
            rows.append({"task": name, "doc_id": i, "prompt": tok.decode(prompt, skip_special_tokens=True),
                         "target": tok.decode(heldout[i][config.prompt_len:], skip_special_tokens=True),
                         "responses": [tok.decode(g.token_ids[i], skip_special_tokens=True)],
                         "metrics": _row_metrics(g, i, train_ngrams, config)})
    return rows


def _record(config: HyperfittingConfig, generators: dict[str, dict], rows: list[dict], extra: dict,
            started: float) -> dict:
    """results.json in the one schema: each generator is an evaluation of the held-out prompts; the
    teacher-forced held-out perplexity/entropy (a training-side measurement) sit in its metrics."""
    from llmgen.evaluate import uncertainty
    from llmgen.results import results_record

    by = {name: [r for r in rows if r["task"] == name] for name in generators}
    metrics = {name: {m: (None if isinstance(v, float) and math.isnan(v) else v) for m, v in g.items()}
               for name, g in generators.items()}
    return results_record(
        config=dump_config(config), model=config.model,
        backend={"name": "hf-loop", "model": config.model, "dtype": config.train.model_dtype},
        seed=config.train.seed, timings={"total_s": round(time.time() - started, 2)}, results=metrics,
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

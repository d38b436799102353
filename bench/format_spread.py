"""Benchmark: does the budgeted bandit recover the exhaustive format-accuracy interval?

Every format is scored on every evaluation example once (probability ranking, SmolLM2-135M-Instruct,
a shipped task); the outcome matrix is cached. The bandit is then simulated many times on those
cached per-example outcomes (each run with its own seed and example order), which is exactly what
it would have seen live, so the comparison with exhaustive search is fair and cheap.

Scoring all formats through ``backend.loglikelihood`` would cost about (formats × examples ×
classes) full forward passes, too slow on a shared 2-core CPU. The formats share each prompt's
instruction and demonstrations, so this script runs that common prefix once per format and only
the rest of each prompt with the cached keys/values, on the very token ids ``encode_pair`` gives;
a random subset is re-scored through the backend interface to check the two agree.

    .venv/bin/python bench/format_spread.py               # writes docs/benchmarks/format_spread.md
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import time
from pathlib import Path

import numpy as np


def prefix_cached_outcomes(backend, task, fmt, demos, examples, batch_size: int = 32) -> tuple[list[bool], list]:
    """Correct/incorrect per example under ``fmt`` by summed-logprob ranking; also the scores."""
    import torch

    from llmgen.backends.base import encode_pair
    from llmgen.prompts.format_eval import choice_pairs

    tok, model = backend.tokenizer, backend.model
    answers = task.format_answers(fmt)
    prompts = [task.format_prompt(fmt, demos, ex) for ex in examples]
    pairs = [[encode_pair(tok, c, a) for c, a in choice_pairs(p, answers)] for p in prompts]
    # When every answer is one token after the same context, one pass per example scores them all.
    single = all(len(cont) == 1 and ctx == row[0][0] for row in pairs for ctx, cont in row)
    seqs = [row[0][0] for row in pairs] if single else [ctx + cont for row in pairs for ctx, cont in row]
    lcp = min(len(s) for s in seqs)
    for s in seqs[1:]:
        lcp = next((i for i in range(lcp) if s[i] != seqs[0][i]), lcp)
    lcp = min(lcp, min(len(ctx) for row in pairs for ctx, _ in row) - 1)
    with torch.no_grad():
        prefix = model(input_ids=torch.tensor([seqs[0][:lcp]]), use_cache=True).past_key_values
        scores = []
        for start in range(0, len(seqs), batch_size):
            chunk = seqs[start:start + batch_size]
            width = max(len(s) for s in chunk) - lcp
            ids = torch.full((len(chunk), width), tok.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), lcp + width), dtype=torch.long)
            mask[:, :lcp] = 1
            for r, s in enumerate(chunk):
                ids[r, : len(s) - lcp] = torch.tensor(s[lcp:])
                mask[r, lcp: len(s)] = 1
            cache = copy.deepcopy(prefix)
            cache.batch_repeat_interleave(len(chunk))
            hidden = model.model(input_ids=ids, attention_mask=mask, past_key_values=cache, use_cache=True)[0]
            for r in range(len(chunk)):
                k = start + r
                if single:
                    logps = model.lm_head(hidden[r, len(chunk[r]) - 1 - lcp]).float().log_softmax(-1)
                    scores += [float(logps[cont[0]]) for _, cont in pairs[k]]
                    continue
                ctx, cont = pairs[k // len(answers)][k % len(answers)]
                pos = torch.arange(len(ctx) - 1, len(ctx) + len(cont) - 1) - lcp
                logps = model.lm_head(hidden[r, pos]).float().log_softmax(-1)
                scores.append(float(logps[torch.arange(len(cont)), torch.tensor(cont)].sum()))
    correct, per_example = [], []
    for i, ex in enumerate(examples):
        row = scores[i * len(answers):(i + 1) * len(answers)]
        correct.append(answers[int(np.argmax(row))] == task.format_gold(ex, fmt))
        per_example.append(row)
    return correct, per_example


def outcome_matrix(args, backend, task, formats, demos, examples) -> np.ndarray:
    """Per format, per example correctness; cached per format in a JSON file (resumable)."""
    path = Path(args.cache)
    key = {"task": args.task, "formats": args.formats, "examples": args.examples, "shots": args.shots,
           "seed": args.seed, "model": backend.fingerprint}
    cached = json.loads(path.read_text()) if path.is_file() else {}
    # The sampled set of a smaller --formats is a prefix of a larger one, so cached rows carry over.
    same = {k: v for k, v in cached.get("key", {}).items() if k != "formats"} == {
        k: v for k, v in key.items() if k != "formats"}
    rows = cached.get("rows", [])[: len(formats)] if same else []
    seconds = cached.get("seconds", 0.0) if same else 0.0
    start = time.time()
    for i in range(len(rows), len(formats)):
        correct, _ = prefix_cached_outcomes(backend, task, formats[i], demos, examples)
        rows.append([int(c) for c in correct])
        from llmgen.io import atomic_write_json

        atomic_write_json(path, {"key": key, "rows": rows, "seconds": seconds + time.time() - start})
        print(f"format {i + 1}/{len(formats)}: accuracy {np.mean(correct):.3f}  "
              f"({time.time() - start:.0f}s)", flush=True)
    args.scoring_seconds = seconds + time.time() - start
    return np.array(rows, dtype=bool)


def verify(backend, task, formats, demos, examples, n: int, seed: int) -> dict:
    """Re-score ``n`` random (format, example) pairs through ``backend.loglikelihood``."""
    rng = random.Random(seed)
    picks = [(rng.randrange(len(formats)), rng.randrange(len(examples))) for _ in range(n)]
    agree, max_diff = 0, 0.0
    for f, e in picks:
        fmt, ex = formats[f], examples[e]
        _, fast = prefix_cached_outcomes(backend, task, fmt, demos, [ex])
        from llmgen.prompts.format_eval import choice_pairs

        slow = [r.logprob for r in backend.loglikelihood(choice_pairs(task.format_prompt(fmt, demos, ex), task.format_answers(fmt)))]
        agree += int(np.argmax(fast[0]) == np.argmax(slow))
        max_diff = max(max_diff, float(np.max(np.abs(np.array(fast[0]) - np.array(slow)))))
    return {"pairs": n, "same_prediction": agree, "max_abs_logprob_diff": max_diff}


def simulate(outcomes: np.ndarray, rule: str, budget: int, batch: int, runs: int) -> dict:
    """Run the bandit ``runs`` times on the cached outcomes (own seed and example order each)."""
    from llmgen.evals.format_spread import bandit_spread, exhaustive_spread

    ex = exhaustive_spread(outcomes)
    n_formats, n = outcomes.shape
    err_max, err_min, both, frac, found = [], [], [], [], []
    for seed in range(runs):
        perm = np.random.default_rng(10_000 + seed).permutation(n)
        m = outcomes[:, perm]
        res = bandit_spread(lambda arm, s, e, m=m: m[arm, s:e], n_formats, n, budget, batch, seed=seed, rule=rule)
        lo, hi = res.interval
        err_max.append(100 * abs(hi - ex["max"]))
        err_min.append(100 * abs(lo - ex["min"]))
        both.append(err_max[-1] <= 2 and err_min[-1] <= 2)
        frac.append(res.total_evaluations / outcomes.size)
        found.append((res.best == ex["best"]) + (res.worst == ex["worst"]))
    return {"rule": rule, "budget": budget, "batch": batch, "runs": runs,
            "mean_err_max": float(np.mean(err_max)), "mean_err_min": float(np.mean(err_min)),
            "p95_err": float(np.percentile(np.maximum(err_max, err_min), 95)),
            "within_2_points": float(np.mean(both)), "evaluations_fraction": float(np.mean(frac)),
            "max_fraction": float(np.max(frac))}


def budgets(n_formats: int, n: int) -> list[tuple[int, int]]:
    """(budget, batch) pairs whose total cost (budget + original + 2 re-evaluations) is <= 25%."""
    out = []
    for batch in (5, 10, 20):
        cap = int(0.25 * n_formats * n) - 3 * n
        for frac in (1.0, 0.5):
            budget = int(cap * frac) // (2 * batch) * (2 * batch)
            if budget >= 2 * batch:
                out.append((budget, batch))
    return out


def report(args, task, formats, outcomes, check, sims, elapsed) -> str:
    from llmgen.evals.format_spread import atomic_perturbations, exhaustive_spread

    ex = exhaustive_spread(outcomes)
    acc = outcomes.mean(axis=1)
    pert = atomic_perturbations([f.settings(task.layout) for f in formats], list(acc),
                                task.layout.relevant_attributes())["by_attribute"]
    lines = [
        "# FormatSpread benchmark: bandit vs exhaustive search",
        "",
        f"Model: embedded SmolLM2-135M-Instruct (HF backend, float32, CPU). Task: `{args.task}` "
        f"({args.shots}-shot, {outcomes.shape[1]} evaluation examples), {len(formats)} plausible formats "
        f"(seed {args.seed}; the original first), probability ranking (summed logprob, no length normalisation). "
        f"Exhaustive scoring: {outcomes.size} evaluations in {elapsed / 60:.1f} min (wall, shared 2-core CPU). "
        "Scoring runs each format's shared prefix (instruction + demonstrations) once and the rest of every "
        "prompt on the cached keys/values, on the token ids of `encode_pair`; the vLLM backend was not used "
        "because its prompt logprobs bypass prefix caching, so it would recompute every prompt in full.",
        "",
        "## Exhaustive (every format on every example)",
        "",
        f"- original format accuracy: {100 * acc[0]:.1f}%",
        f"- interval: [{100 * ex['min']:.1f}%, {100 * ex['max']:.1f}%], spread **{100 * ex['spread']:.1f} points**",
        f"- median {100 * np.median(acc):.1f}%, formats below 60%: {int((acc < 0.6).sum())}, "
        f"within 2 points of the best: {int((acc >= ex['max'] - 0.02).sum())}, "
        f"within 2 points of the worst: {int((acc <= ex['min'] + 0.02).sum())}",
        f"- best format: `{formats[ex['best']].template(task.layout)!r}`",
        f"- worst format: `{formats[ex['worst']].template(task.layout)!r}`",
        f"- fast scorer check: {check['same_prediction']}/{check['pairs']} random (format, example) pairs give "
        f"the same prediction through `backend.loglikelihood` (max |logprob diff| {check['max_abs_logprob_diff']:.1e})",
        "",
        "## Bandit, simulated on the cached outcomes",
        "",
        f"{args.runs} runs per row, each with its own seed and example order. Error = |bandit − exhaustive| "
        "for the interval's ends, in accuracy points; cost = all evaluations (the original's full run, the "
        "budget, and the final full evaluations of the best and worst) over the exhaustive count.",
        "",
        "| rule | budget E | batch B | mean err max | mean err min | p95 worst end | both ends ≤ 2 pts | cost |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in sims:
        lines.append(f"| {s['rule']} | {s['budget']} | {s['batch']} | {s['mean_err_max']:.2f} | {s['mean_err_min']:.2f} "
                     f"| {s['p95_err']:.1f} | {100 * s['within_2_points']:.0f}% | {100 * s['evaluations_fraction']:.1f}% "
                     f"(max {100 * s['max_fraction']:.1f}%) |")
    lines += ["", "## Atomic perturbations (pairs of formats differing in one choice)", "",
              "| attribute | pairs | mean abs change | max abs change |", "|---|---|---|---|"]
    for k, v in pert.items():
        lines.append(f"| {k} | {v['pairs']} | {100 * v['mean_abs_delta']:.1f} pts | {100 * v['max_abs_delta']:.1f} pts |")
    lines += ["", "Reproduce: `.venv/bin/python bench/format_spread.py` (outcomes cached in "
              f"`{args.cache}`).", ""]
    return "\n".join(lines)


def batching(args) -> dict:
    """``--formats K`` as one batch against K single-format evaluations (issue 17 item 2).

    Both go through ``llmgen.prompts.format_eval.FormatEvaluator`` on the same backend, requests and
    examples, without the request cache: "one batch" sends every format's requests in one backend
    call, as ``eval --formats`` and the recipe's exhaustive mode do; "separate" makes one call per
    format, as K separate runs would. Each mode runs twice, alternating, and reports the best wall
    and CPU seconds; a separate run would also pay a backend start-up (``load_s``) per format.
    """
    import torch

    from llmgen.backends import get_backend
    from llmgen.cache import RequestCache
    from llmgen.prompts.format_eval import FormatEvaluator, Scorer
    from llmgen.prompts.formats import sample_formats
    from llmgen.recipes.format_spread import split_examples, task_requests
    from llmgen.tasks.classification import load_classification_task

    torch.set_num_threads(2)
    task = load_classification_task(args.task, 210, args.seed)
    demos, examples = split_examples(task, args.shots, args.examples, args.seed)
    formats = sample_formats(task.prompt_layout(), args.formats, seed=args.seed, original=task.original_format)
    start = time.perf_counter()
    backend = get_backend("hf", args.model)
    load_s = time.perf_counter() - start
    wall: dict[str, list[float]] = {"separate": [], "one batch": []}
    cpu: dict[str, list[float]] = {"separate": [], "one batch": []}
    outcomes = {}
    for mode in ("separate", "one batch", "one batch", "separate"):
        ev = FormatEvaluator(task_requests(task, formats, demos, examples, "probability_ranking"),
                             Scorer(backend, RequestCache(None), task.name))
        w, c = time.perf_counter(), time.process_time()
        if mode == "one batch":
            outcomes[mode] = ev.evaluate([(arm, 0, len(examples)) for arm in range(len(formats))])
        else:
            outcomes[mode] = [ev(arm, 0, len(examples)) for arm in range(len(formats))]
        wall[mode].append(time.perf_counter() - w)
        cpu[mode].append(time.process_time() - c)
    backend.close()
    out = {"model": args.model, "task": args.task, "formats": len(formats), "examples": len(examples),
           "shots": args.shots, "pairs": len(formats) * len(examples) * len(task.format_answers(formats[0])), "load_s": round(load_s, 2),
           "wall_s": {k: round(min(v), 2) for k, v in wall.items()},
           "cpu_s": {k: round(min(v), 2) for k, v in cpu.items()},
           "same_outcomes": outcomes["separate"] == outcomes["one batch"]}
    print(json.dumps(out, indent=2))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batching", action="store_true", help="time --formats K as one batch vs K separate calls")
    p.add_argument("--model", default="default", help="model for --batching")
    p.add_argument("--task", default="sentiment")
    p.add_argument("--formats", type=int, default=50)
    p.add_argument("--examples", type=int, default=30)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", type=int, default=200, help="bandit simulations per setting")
    p.add_argument("--verify", type=int, default=12, help="pairs re-scored through backend.loglikelihood")
    p.add_argument("--cache", default="runs/bench_format_spread/outcomes.json")
    p.add_argument("--out", default="docs/benchmarks/format_spread.md")
    args = p.parse_args()
    if args.batching:
        batching(args)
        return

    import torch

    from llmgen.backends import get_backend
    from llmgen.prompts.formats import sample_formats
    from llmgen.recipes.format_spread import split_examples
    from llmgen.tasks.classification import load_classification_task

    torch.set_num_threads(2)
    task = load_classification_task(args.task, args.examples + args.shots + 50, args.seed)
    demos, examples = split_examples(task, args.shots, args.examples, args.seed)
    formats = sample_formats(task.prompt_layout(), args.formats, seed=args.seed)
    backend = get_backend("hf", "default")
    outcomes = outcome_matrix(args, backend, task, formats, demos, examples)
    elapsed = args.scoring_seconds
    check = verify(backend, task, formats, demos, examples, args.verify, args.seed)
    print("check:", check, flush=True)
    sims = [simulate(outcomes, rule, b, bs, args.runs) for b, bs in budgets(*outcomes.shape)
            for rule in ("thompson", "ucb")]
    text = report(args, task, formats, outcomes, check, sims, elapsed)
    from llmgen.io import atomic_write_text

    atomic_write_text(args.out, text)
    print(text)


if __name__ == "__main__":
    main()

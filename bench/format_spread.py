"""Reproduction driver (not a test): FormatSpread's exhaustive spread, and does the bandit recover it?

Runs the committed config (``recipes/format_spread/configs/cpu.yaml``: embedded SmolLM2-135M,
``sentiment``, 1-shot, 30 examples, 50 formats, every format on every example) through the CLI,
``llmgen format-spread --config ...``, reads the per-format, per-example outcomes from the run folder
(``format_samples.jsonl``, the schema every ``--formats`` run writes), and simulates the budgeted
bandit many times on them (each run with its own seed and example order: exactly what it would
have seen live, so the comparison with exhaustive search is fair and cheap). Writes
``docs/benchmarks/format_spread.md``, keeping its hand-written sections from ``KEEP_FROM`` on.

    .venv/bin/python bench/format_spread.py [--reuse]
    .venv/bin/python bench/format_spread.py --batching --model runs/tiny_model --formats 10 --examples 20
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from seeds import ROOT, SEEDS, fmt, llmgen_command, run_logged

CONFIG = ROOT / "recipes" / "format_spread" / "configs" / "cpu.yaml"
DOC = ROOT / "docs" / "benchmarks" / "format_spread.md"
KEEP_FROM = "## One `llmgen format-spread` run"
# The exhaustive figure this page showed before the fidelity changes (same task, shots, examples, formats).
PREVIOUS = {"spread": 0.60, "min": 0.40, "max": 1.00, "original": 1.00}


def outcome_matrix(run: Path) -> np.ndarray:
    """``[format, example]`` 0/1 correctness from a run folder's ``format_samples.jsonl``."""
    from llmgen.io import read_jsonl

    rows = read_jsonl(run / "format_samples.jsonl", required=["format_id", "doc_id", "metrics"])
    formats = sorted({r["format_id"] for r in rows})
    docs = sorted({r["doc_id"] for r in rows}, key=str)
    col = {d: j for j, d in enumerate(docs)}
    out = np.full((len(formats), len(docs)), -1, dtype=int)
    metric = next(iter(rows[0]["metrics"]))
    for r in rows:
        out[r["format_id"], col[r["doc_id"]]] = int(bool(r["metrics"][metric]))
    if (out < 0).any():
        raise SystemExit(f"error: {run} is not an exhaustive run (some format/example pairs were not evaluated)")
    return out.astype(bool)


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
            "max_within_2_points": float(np.mean(np.array(err_max) <= 2)),
            "min_within_2_points": float(np.mean(np.array(err_min) <= 2)),
            "p95_err": float(np.percentile(np.maximum(err_max, err_min), 95)),
            "within_2_points": float(np.mean(both)), "evaluations_fraction": float(np.mean(frac)),
            "max_fraction": float(np.max(frac))}


def spread_interval(outcomes: np.ndarray, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the spread (max − min accuracy over formats).

    Resamples examples with replacement, the same draw for every format (the formats are evaluated
    on the same examples), and takes the spread of each resample's per-format accuracies.
    """
    n = outcomes.shape[1]
    rng = np.random.default_rng(seed)
    boot = [np.ptp(outcomes[:, rng.integers(0, n, n)].mean(axis=1)) for _ in range(resamples)]
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return float(lo), float(hi)


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
    from llmgen.prompts.render import answers_in, prompt_structure
    from llmgen.recipes.format_spread import split_examples, task_requests
    from llmgen.tasks.classification import load_classification_task

    torch.set_num_threads(2)
    task = load_classification_task(args.task, 210, args.seed)
    demos, examples = split_examples(task, args.shots, args.examples, args.seed)
    formats = sample_formats(prompt_structure(task).layout, args.formats, seed=args.seed, original=prompt_structure(task).original)
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
           "shots": args.shots, "pairs": len(formats) * len(examples) * len(answers_in(task, formats[0])),
           "load_s": round(load_s, 2),
           "wall_s": {k: round(min(v), 2) for k, v in wall.items()},
           "cpu_s": {k: round(min(v), 2) for k, v in cpu.items()},
           "same_outcomes": outcomes["separate"] == outcomes["one batch"]}
    print(json.dumps(out, indent=2))
    return out


def report(config: str, run: Path, entry: dict, outcomes: np.ndarray, sims: list[dict], runs: int,
           seconds: float) -> tuple[str, str]:
    """The generated part of the page and the one-line summary for docs/benchmarks.md."""
    from llmgen.evals.format_spread import exhaustive_spread

    ex = exhaustive_spread(outcomes)
    acc = outcomes.mean(axis=1)
    n_formats, n = outcomes.shape
    lo, hi = spread_interval(outcomes)
    cfg_rel = Path(config).relative_to(ROOT) if Path(config).is_absolute() else config
    cfg = json.loads((run / "config.json").read_text(encoding="utf-8"))
    # A nested config.json (eval: ...) comes from `--config`; a flat one from the flags the command had before.
    how = (f"run through `llmgen format-spread --config {cfg_rel}` (`bench/format_spread.py`)" if "eval" in cfg else
           "this run went through the command's flags before `--config` existed (`llmgen format-spread --mode exhaustive "
           "--num-formats 50 --shots 1 --limit 30 --num-generated 81 --seed 0`); `dump_config` of the committed config "
           "has the same values, and `bench/format_spread.py` now runs it with `--config`")
    lines = [
        "# FormatSpread benchmark: exhaustive spread, and bandit vs exhaustive search",
        "",
        f"Model: embedded SmolLM2-135M-Instruct (HF backend, float32, CPU). Config `{cfg_rel}`; {how}. "
        f"Task `{cfg.get('task')}`, "
        f"{cfg.get('shots')}-shot, {n} evaluation examples, "
        f"{n_formats} plausible formats (seed 0; the original first), probability ranking (summed logprob of "
        f"each answer, no length normalisation). Exhaustive: {outcomes.size} evaluations in {seconds / 60:.1f} min "
        "wall (one torch thread, 2-core machine shared with other jobs).",
        "",
        "## Exhaustive (every format on every example)",
        "",
        f"- original format accuracy: {100 * acc[0]:.1f}%",
        f"- interval: [{100 * ex['min']:.1f}%, {100 * ex['max']:.1f}%], spread **{100 * ex['spread']:.1f} points** "
        f"(95% bootstrap over the {n} examples: [{100 * lo:.1f}, {100 * hi:.1f}] points)",
        f"- median {100 * np.median(acc):.1f}%, formats below 60%: {int((acc < 0.6).sum())}, "
        f"within 2 points of the best: {int((acc >= ex['max'] - 0.02).sum())}, "
        f"within 2 points of the worst: {int((acc <= ex['min'] + 0.02).sum())}",
        f"- best format: `{entry['formats'][ex['best']]['format']!r}`",
        f"- worst format: `{entry['formats'][ex['worst']]['format']!r}`",
        f"- the earlier figure on this page (before the fidelity changes: scored pairs `(\"...Sentiment: \", "
        f"\"negative\")`, demonstrations from the first examples): spread {100 * PREVIOUS['spread']:.0f} points "
        f"[{100 * PREVIOUS['min']:.0f}%, {100 * PREVIOUS['max']:.0f}%], original {100 * PREVIOUS['original']:.0f}%; "
        f"now {100 * ex['spread']:.1f} points: "
        + ("within the bootstrap interval." if lo <= PREVIOUS["spread"] <= hi else "**outside** the bootstrap interval."),
        "",
        "## Bandit, simulated on the exhaustive outcomes",
        "",
        f"{runs} runs per row, each with its own seed and example order. Error = |bandit − exhaustive| "
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
    for k, v in entry["perturbations"].items():
        lines.append(f"| {k} | {v['pairs']} | {100 * v['mean_abs_delta']:.1f} pts | {100 * v['max_abs_delta']:.1f} pts |")
    rel = run.relative_to(ROOT) if run.is_absolute() else run
    lines += ["", f"Reproduce: `.venv/bin/python bench/format_spread.py` (run folder `{rel}`).", ""]
    summary = (f"exhaustive spread {100 * ex['spread']:.1f} points [{100 * ex['min']:.1f}%, {100 * ex['max']:.1f}%] "
               f"(95% bootstrap over examples [{100 * lo:.1f}, {100 * hi:.1f}]); earlier doc 60 points")
    return "\n".join(lines), summary


SEEDS_START, SEEDS_END = "<!-- seeds: bench/format_spread.py --seeds -->", "<!-- /seeds -->"


def seed_section(config: str, runs: list[tuple[int, Path, float]]) -> str:
    """The spread of the committed config across seeds: each seed samples its own 50 formats and its
    own demonstration and example order (the recipe's ``seed``), so the interval covers the choice
    of formats, which the bootstrap over examples of one run does not."""
    rows, spreads, lows, highs, originals = [], [], [], [], []
    for seed, run, wall in runs:
        entry = next(iter(json.loads((run / "results.json").read_text(encoding="utf-8"))["format_spread"].values()))
        acc = outcome_matrix(run).mean(axis=1)
        lo, hi = spread_interval(outcome_matrix(run))
        worst = next(f["format"] for f in entry["formats"] if f["format_id"] == entry["worst"])
        spreads.append(100 * (acc.max() - acc.min()))
        lows.append(100 * acc.min())
        highs.append(100 * acc.max())
        originals.append(100 * acc[0])
        rows.append(f"| {seed} | {acc[0]:.1%} | {acc.min():.1%} | {acc.max():.1%} | {spreads[-1]:.1f} "
                    f"[{100 * lo:.1f}, {100 * hi:.1f}] | `{worst!r}` | {wall:.0f} s |")
    return "\n".join([
        SEEDS_START, f"## Across seeds ({len(runs)} runs of `{config}`, `seed=S`)", "",
        "Each seed samples its own formats, demonstration and example order. Mean [95% Student-t interval] "
        f"across the seeds (`bench/seeds.py`): spread **{fmt(spreads, 1)} points**, worst format {fmt(lows, 1)}%, "
        f"best {fmt(highs, 1)}%, original format {fmt(originals, 1)}%.", "",
        "| seed | original | worst | best | spread, points [95% bootstrap over examples] | worst format | wall |",
        "|---|---|---|---|---|---|---|", *rows, "", SEEDS_END])


def run_seeds(args) -> None:
    """``llmgen format-spread --config ... seed=S`` for each seed (a finished run folder is kept with
    ``--reuse``), then the across-seeds section of the page, after its hand-written part."""
    from llmgen.io import atomic_write_text

    runs = []
    for seed in args.seeds:
        run = Path(args.run).parent / f"seed{seed}"
        wall = 0.0
        if not (args.reuse and (run / "results.json").is_file()):
            argv = llmgen_command("format-spread", args.config, [f"seed={seed}", f"output_dir={run}", *args.override])
            print(" ".join(argv), flush=True)
            wall = run_logged(argv, run.with_suffix(".log"))
        wall = wall or json.loads((run / "results.json").read_text(encoding="utf-8"))["timings"]["total_s"]
        runs.append((seed, run, wall))
    doc = Path(args.out)
    text = doc.read_text(encoding="utf-8")
    if SEEDS_START in text:
        text = text[:text.index(SEEDS_START)] + text[text.index(SEEDS_END) + len(SEEDS_END):].lstrip("\n")
    rel = Path(args.config).resolve()
    rel = rel.relative_to(ROOT) if rel.is_relative_to(ROOT) else rel
    atomic_write_text(doc, text.rstrip("\n") + "\n\n" + seed_section(str(rel), runs) + "\n")
    print(f"wrote the across-seeds section of {doc}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(CONFIG))
    p.add_argument("--override", nargs="*", default=[], help="extra key=value overrides")
    p.add_argument("--run", default=str(ROOT / "runs" / "repro" / "format_spread" / "seed0"))
    p.add_argument("--reuse", action="store_true", help="keep the run folder if it holds results.json")
    p.add_argument("--runs", type=int, default=200, help="bandit simulations per setting")
    p.add_argument("--out", default=str(DOC))
    p.add_argument("--batching", action="store_true", help="time --formats K as one batch vs K separate calls")
    p.add_argument("--model", default="default", help="model for --batching")
    p.add_argument("--task", default="sentiment", help="task for --batching")
    p.add_argument("--formats", type=int, default=10, help="formats for --batching")
    p.add_argument("--examples", type=int, default=20, help="examples for --batching")
    p.add_argument("--shots", type=int, default=1, help="shots for --batching")
    p.add_argument("--seed", type=int, default=0, help="seed for --batching")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help=f"run the config for these seeds (e.g. {' '.join(map(str, SEEDS))}) and write the across-seeds section")
    args = p.parse_args()
    if args.batching:
        batching(args)
        return
    if args.seeds:
        run_seeds(args)
        return

    from llmgen.io import atomic_write_text

    run = Path(args.run)
    seconds = 0.0
    if not (args.reuse and (run / "results.json").is_file()):
        argv = llmgen_command("format-spread", args.config, [f"output_dir={run}", *args.override])
        print(" ".join(argv), flush=True)
        seconds = run_logged(argv, run.with_suffix(".log"))
    results = json.loads((run / "results.json").read_text(encoding="utf-8"))
    seconds = seconds or results["timings"]["total_s"]
    entry = next(iter(results["format_spread"].values()))
    outcomes = outcome_matrix(run)
    start = time.time()
    sims = [simulate(outcomes, rule, b, bs, args.runs) for b, bs in budgets(*outcomes.shape)
            for rule in ("thompson", "ucb")]
    print(f"simulated {len(sims)} settings in {time.time() - start:.0f}s", flush=True)
    text, summary = report(args.config, run, entry, outcomes, sims, args.runs, seconds)
    doc = Path(args.out)
    old = doc.read_text(encoding="utf-8") if doc.is_file() else ""
    kept = old[old.index(KEEP_FROM):] if KEEP_FROM in old else ""
    atomic_write_text(doc, text + ("\n" + kept if kept else ""))
    print(summary)


if __name__ == "__main__":
    main()

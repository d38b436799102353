"""Reproduction driver (not a test): FormatSpread on real Super-NaturalInstructions tasks.

Two jobs:

* ``cut``: builds the committed task files under ``recipes/format_spread/data/sni/`` from pages of
  the source file (allenai/natural-instructions ``tasks/<task>.json``, read 16,000 characters at a
  time). The pages are joined, the text is cut right after the N-th complete instance and the JSON
  closed (``\\n    ]\\n}``), so every character before the cut is the source's own; the result must
  parse and hold exactly N instances.
* ``run`` (default): for each task and each shot count, ``llmgen format-spread --config
  recipes/format_spread/configs/sni_cpu.yaml task=<file> shots=K`` in exhaustive mode, then per
  task the spread with a 95% bootstrap interval over examples, and the Thompson bandit simulated on
  the same exhaustive outcomes (``bench/format_spread.py``'s ``simulate``).

    .venv/bin/python bench/format_spread_sni.py [--reuse]     # 10 runs, ~25 min on one shared thread
    .venv/bin/python bench/format_spread_sni.py cut PAGE.lit [PAGE.lit ...] --instances 50 --out FILE
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
from seeds import ROOT, llmgen_command, run_logged

DATA = ROOT / "recipes" / "format_spread" / "data" / "sni"
CONFIG = ROOT / "recipes" / "format_spread" / "configs" / "sni_cpu.yaml"
RUNS = ROOT / "runs" / "repro" / "format_spread_sni"
DOC = ROOT / "docs" / "benchmarks" / "format_spread.md"
# The five tasks of the paper's set (reference run_evals.sh) with short inputs, in the doc's order; the
# longest prompts last (each shot count runs in this order), so a run cut short loses the costliest.
TASKS = ("task190_snli_classification", "task1612_sick_label_classification",
         "task319_stereoset_classification_profession", "task069_abductivenli_classification",
         "task133_winowhy_reason_plausibility_detection")
SHOTS = (1, 5)
# Thompson settings simulated on each exhaustive matrix (budget E, batch B); with 6 formats and 16
# examples (96 evaluations), E = 48 gives each phase 6 pulls of 4 examples.
BANDIT = ((24, 4), (32, 4), (48, 4))
SECTION = "## FormatSpread on SNI tasks"
PLOT = ROOT / "docs" / "benchmarks" / "format_spread" / "sni_spread.png"
CLOSING = "\n    ]\n}\n"


def join_pages(paths: list[Path]) -> str:
    """The source text of consecutive pages, each stored as the JSON string literal read_file returned."""
    return "".join(json.loads('"' + p.read_text(encoding="utf-8").rstrip("\n") + '"') for p in paths)


def cut_instances(text: str, n: int) -> str:
    """The source text up to the end of its ``n``-th instance, closed into a complete JSON document."""
    m = re.search(r'"Instances"\s*:\s*\[', text)
    if m is None:
        raise SystemExit("error: the pages hold no 'Instances' list")
    start = m.end()
    decoder = json.JSONDecoder()
    pos = start
    for _ in range(n):
        while pos < len(text) and text[pos] in " \n\t,":
            pos += 1
        _, pos = decoder.raw_decode(text, pos)  # raises if the pages end before instance n is complete
    out = text[:pos] + CLOSING
    doc = json.loads(out)
    if len(doc["Instances"]) != n:
        raise SystemExit(f"error: cut holds {len(doc['Instances'])} instances, {n} asked")
    return out


def cut_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description="cut an SNI task file from read_file pages")
    p.add_argument("pages", nargs="+", type=Path)
    p.add_argument("--instances", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    from llmgen.io import atomic_write_text

    text = cut_instances(join_pages(args.pages), args.instances)
    atomic_write_text(args.out, text)
    print(f"{args.out}: {args.instances} instances, {len(text)} characters")


def run_dir(runs: Path, task: str, shots: int) -> Path:
    return runs / task / f"shots{shots}"


def run_all(args) -> dict[tuple[str, int], float]:
    """Every task x shots run through the CLI (1-shot first); wall seconds per run (0: reused)."""
    seconds = {}
    for shots in SHOTS:
        for task in TASKS:
            out = run_dir(Path(args.runs), task, shots)
            if args.reuse and (out / "results.json").is_file():
                seconds[task, shots] = 0.0
                continue
            argv = llmgen_command("format-spread", args.config,
                                  [f"task={DATA / (task + '.json')}", f"shots={shots}", f"output_dir={out}",
                                   *args.override])
            print(" ".join(argv), flush=True)
            seconds[task, shots] = run_logged(argv, out.with_suffix(".log"))
            print(f"{task} {shots}-shot: {seconds[task, shots]:.0f} s", flush=True)
    return seconds


def task_figures(run: Path, sims: int) -> dict:
    """Exhaustive spread with its bootstrap interval, and the simulated bandit, for one run folder."""
    from format_spread import outcome_matrix, simulate, spread_interval

    from llmgen.evals.format_spread import exhaustive_spread
    from llmgen.evals.stats import mcnemar
    from llmgen.io import read_jsonl

    results = json.loads((run / "results.json").read_text(encoding="utf-8"))
    entry = next(iter(results["format_spread"].values()))
    outcomes = outcome_matrix(run)
    ex = exhaustive_spread(outcomes)
    lo, hi = spread_interval(outcomes)
    acc = outcomes.mean(axis=1)
    rows = read_jsonl(run / "format_samples.jsonl", required=["format_id", "target", "responses"])
    golds = [r["target"] for r in rows if r["format_id"] == 0]
    majority = max(golds.count(g) for g in set(golds)) / len(golds)
    answers: dict[int, list[str]] = {}
    for r in rows:
        answers.setdefault(r["format_id"], []).append(r["responses"][0])
    # how constant the model's answer is: per format, the share of its most frequent answer
    top_answer = float(np.mean([max(a.count(x) for x in set(a)) / len(a) for a in answers.values()]))
    return {"formats": outcomes.shape[0], "examples": outcomes.shape[1], "original": float(acc[0]),
            "min": ex["min"], "max": ex["max"], "spread": ex["spread"], "spread_ci": (lo, hi),
            "median": float(np.median(acc)), "majority": majority, "top_answer": top_answer,
            "best_vs_worst_p": mcnemar(outcomes[ex["best"]], outcomes[ex["worst"]], exact=True).p_value,
            "best_format": entry["formats"][ex["best"]]["format"],
            "worst_format": entry["formats"][ex["worst"]]["format"],
            "seconds": results["timings"]["total_s"],
            "bandit": [simulate(outcomes, "thompson", budget, batch, sims) for budget, batch in BANDIT]}


def plot(path: Path, figures: dict) -> None:
    """Spread per task, 1- vs 5-shot bars, with the 95% bootstrap intervals as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_formats, n = figures[TASKS[0], SHOTS[0]]["formats"], figures[TASKS[0], SHOTS[0]]["examples"]
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 3.8))
    ax.set_title(f"SmolLM2-135M-Instruct, {n_formats} formats x {n} examples: max - min accuracy, 95% bootstrap")
    ax.set_ylabel("spread (accuracy points)")
    x = np.arange(len(TASKS))
    width = 0.38
    for j, (shots, color) in enumerate(zip(SHOTS, ("#4477aa", "#ee6677"), strict=True)):
        spread = np.array([100 * figures[t, shots]["spread"] for t in TASKS])
        lo = np.array([100 * figures[t, shots]["spread_ci"][0] for t in TASKS])
        hi = np.array([100 * figures[t, shots]["spread_ci"][1] for t in TASKS])
        ax.bar(x + (j - 0.5) * width, spread, width, yerr=[spread - lo, hi - spread], capsize=3, color=color,
               label=f"{shots}-shot")
    ax.set_xticks(x, [t.split("_")[0] + "\n" + t.split("_")[1] for t in TASKS])
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def section(figures: dict, sims: int, config: str) -> tuple[str, str]:
    """The doc's SNI section and the one summary row for docs/benchmarks.md."""
    first = figures[TASKS[0], SHOTS[0]]
    cfg_rel = Path(config).resolve().relative_to(ROOT)
    total_min = sum(f["seconds"] for f in figures.values()) / 60
    lines = [
        SECTION, "",
        f"Model: embedded SmolLM2-135M-Instruct, HF backend, float32, one torch thread on the shared 2-core CPU. "
        f"Config `{cfg_rel}` (`llmgen format-spread --config {cfg_rel} task=<file> shots=K`, run by "
        f"`bench/format_spread_sni.py`): five tasks of the paper's set with the reference's per-task "
        f"structures, files of unchanged real rows in `recipes/format_spread/data/sni/` (the first 40-50 "
        f"instances of each source file; see its README). {first['formats']} plausible formats (seed 0, the "
        f"original first), every format on every example (exhaustive), {first['examples']} evaluation "
        f"examples per task after the 10-instance demonstration pool, demonstrations the first K of the pool, "
        f"probability ranking by summed logprob. Total {total_min:.0f} min of recipe time for the "
        f"{len(figures)} runs (each run's `timings.total_s`: model load and scoring).",
        "",
        "Spread = max − min accuracy over the formats, in points; its 95% interval is the percentile "
        "bootstrap over the examples (2000 resamples, the same examples for every format: "
        "`bench/format_spread.py` `spread_interval`, as the sentiment figure above). Majority = the share of "
        "the most frequent gold label among the evaluated examples (what a constant answer scores); top answer = "
        "per format, the share of the examples that get the model's most frequent answer, averaged over the "
        "formats (100: one answer for every example). "
        "p = exact McNemar test of the best against the worst format on the same examples; best and "
        "worst are chosen after looking, so p is optimistic.",
        "",
        "| task | shots | original | worst | best | spread [95% CI] | median | majority | top answer | p best vs worst |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for task in TASKS:
        for shots in SHOTS:
            f = figures[task, shots]
            lines.append(f"| {task} | {shots} | {100 * f['original']:.1f} | {100 * f['min']:.1f} | "
                         f"{100 * f['max']:.1f} | **{100 * f['spread']:.1f}** [{100 * f['spread_ci'][0]:.1f}, "
                         f"{100 * f['spread_ci'][1]:.1f}] | {100 * f['median']:.1f} | {100 * f['majority']:.1f} | "
                         f"{100 * f['top_answer']:.0f} | "
                         f"{f['best_vs_worst_p']:.3g} |")
    spreads = {shots: [100 * figures[t, shots]["spread"] for t in TASKS] for shots in SHOTS}
    lines += ["", f"![spread per task, 1- vs 5-shot](format_spread/{PLOT.name})", "",
              "Mean spread over the five tasks: " + "; ".join(
                  f"{shots}-shot {np.mean(v):.1f} points (range {min(v):.1f}-{max(v):.1f})"
                  for shots, v in spreads.items()) + ".", "",
              "Best and worst formats:", "",
              "| task | shots | best format | worst format |", "|---|---|---|---|"]
    for task in TASKS:
        for shots in SHOTS:
            f = figures[task, shots]
            lines.append(f"| {task} | {shots} | `{f['best_format']!r}` | `{f['worst_format']!r}` |")
    lines += ["", "### Thompson sampling against exhaustive search on the same outcomes", "",
              f"The bandit (`llmgen.evals.format_spread.bandit_spread`, reference prior from the original's "
              f"full run, two phases) simulated {sims} times per task and setting on each run's exhaustive "
              "outcome matrix, each time with its own seed and example order (`bench/format_spread.py` "
              "`simulate`). Within 2 pts = the fraction of simulations whose best (max) or worst (min) "
              "accuracy is within 2 accuracy points of exhaustive search's; cost = all evaluations (original, "
              "budget, final full runs of best and worst) over the exhaustive count.", "",
              "| task | shots | " + " | ".join(f"E={b}, B={bs}: max / min / both" for b, bs in BANDIT) + " |",
              "|---|---|" + "---|" * len(BANDIT)]
    for task in TASKS:
        for shots in SHOTS:
            cells = []
            for s in figures[task, shots]["bandit"]:
                cells.append(f"{100 * s['max_within_2_points']:.0f}% / {100 * s['min_within_2_points']:.0f}% / "
                             f"{100 * s['within_2_points']:.0f}%")
            lines.append(f"| {task} | {shots} | " + " | ".join(cells) + " |")
    spread_runs = {key for key, f in figures.items() if f["spread"] > 0}
    lines += ["", f"Pooled (mean of the per-run fractions and errors) over all {len(figures)} runs, and over the "
              f"{len(spread_runs)} whose exhaustive spread is above zero (in the others every format scores the "
              "same, so any pick is exact):", "",
              "| runs | E | B | max within 2 pts | min within 2 pts | both | mean err max / min (pts) | cost |",
              "|---|---|---|---|---|---|---|---|"]
    for label, keys in (("all", set(figures)), ("spread > 0", spread_runs)):
        for budget, batch in BANDIT:
            rows = [s for key in sorted(keys) for s in figures[key]["bandit"]
                    if (s["budget"], s["batch"]) == (budget, batch)]
            if not rows:
                continue
            lines.append(f"| {label} | {budget} | {batch} | "
                         f"{100 * np.mean([r['max_within_2_points'] for r in rows]):.0f}% | "
                         f"{100 * np.mean([r['min_within_2_points'] for r in rows]):.0f}% | "
                         f"{100 * np.mean([r['within_2_points'] for r in rows]):.0f}% | "
                         f"{np.mean([r['mean_err_max'] for r in rows]):.1f} / "
                         f"{np.mean([r['mean_err_min'] for r in rows]):.1f} | "
                         f"{100 * np.mean([r['evaluations_fraction'] for r in rows]):.0f}% |")
    lines += ["", "Reproduce: `.venv/bin/python bench/format_spread_sni.py` (run folders "
              f"`{Path(RUNS).relative_to(ROOT)}/<task>/shots<K>`; `--reuse` keeps finished runs).", ""]
    summary = "; ".join(f"{shots}-shot spread {np.mean(v):.1f} points mean ({min(v):.1f}-{max(v):.1f})"
                        for shots, v in spreads.items())
    return "\n".join(lines), summary


def replace_section(doc: str, text: str) -> str:
    """``doc`` with its SNI section (heading to the next ``## `` heading or the end) replaced or appended."""
    if SECTION not in doc:
        return doc.rstrip("\n") + "\n\n" + text
    start = doc.index(SECTION)
    nxt = doc.find("\n## ", start + len(SECTION))
    return doc[:start] + text + (doc[nxt:] if nxt >= 0 else "")


def report_main(args) -> None:
    from llmgen.io import atomic_write_text

    figures = {(task, shots): task_figures(run_dir(Path(args.runs), task, shots), args.sims)
               for shots in SHOTS for task in TASKS}
    plot(PLOT, figures)
    text, summary = section(figures, args.sims, args.config)
    doc = Path(args.out)
    atomic_write_text(doc, replace_section(doc.read_text(encoding="utf-8") if doc.is_file() else "", text))
    print(summary)


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(CONFIG))
    p.add_argument("--override", nargs="*", default=[], help="extra key=value overrides for every run")
    p.add_argument("--runs", default=str(RUNS), help="folder of the run folders (<task>/shots<K>)")
    p.add_argument("--reuse", action="store_true", help="keep run folders that hold results.json")
    p.add_argument("--no-report", action="store_true", help="only run")
    p.add_argument("--sims", type=int, default=200, help="bandit simulations per task and setting")
    p.add_argument("--out", default=str(DOC))
    args = p.parse_args(argv)
    run_all(args)
    if not args.no_report:
        report_main(args)


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["cut"]:
        cut_main(sys.argv[2:])
    else:
        main(sys.argv[1:])

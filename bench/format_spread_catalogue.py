"""Format spread of the embedded SmolLM2-135M on lm-eval catalogue tasks, on real rows.

Each task is lm-eval 0.4.13's own config (prompt, few-shot count and sampler, generation settings,
filters, metrics: included as is by ``llmgen.tasks.lmeval.local_task_yaml``), reading its splits
from the real rows committed under ``bench/data`` (sources, commits and conversions in
``bench/data/SOURCES.md``). Per task it runs, through the CLI, at lm-eval's default flags::

    llmgen eval --model default --tasks lmeval:local_NAME --include-path DIR --formats 10 --limit N

and reads the run folder: ``results.json``'s ``format_spread[task]`` (original / min / median / max /
spread per metric) and ``format_samples.jsonl`` (every format's per-document metrics), from which
each format's 95% interval is the seeded percentile bootstrap the runner already writes for the
original format (``llmgen.evaluate.uncertainty``). Writes one JSON and prints a Markdown table.

    nice -n 10 .venv/bin/python bench/format_spread_catalogue.py [--limit gsm8k=25 ...] [--reuse]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from seeds import ROOT, run_logged

from llmgen.evaluate import uncertainty
from llmgen.io import read_jsonl
from llmgen.tasks.lmeval import local_task_yaml

DATA = ROOT / "bench" / "data"
FORMATS = 10
SEED = 0
# task -> (lm-eval YAML under lm_eval/tasks, {split: rows file under bench/data}, extra YAML lines,
#          documents evaluated by default). The defaults are what fitted an hour of a 2-core machine
#          shared with four other jobs (load 8-11, one torch thread): on it one batch of 16 GSM8K
#          generations (5-shot, ~1k-token prompts, most formats run to lm-eval's 256 tokens) took
#          ~20 min, a batch of 16 BBH generations ~4 min, 16 LogiQA choices (~300 tokens) ~3 min.
#          Pass --limit NAME=N for more (the committed rows hold 40 / 250 / 120 documents).
TASKS: dict[str, tuple[str, dict[str, str], str, int]] = {
    "gsm8k": ("gsm8k/gsm8k.yaml", {"train": "gsm8k_train.jsonl", "test": "gsm8k_test.jsonl"}, "tag: []\n", 2),
    "bbh_fewshot_boolean_expressions": ("bbh/fewshot/boolean_expressions.yaml",
                                        {"test": "bbh_boolean_expressions.jsonl"}, "tag: []\n", 16),
    # the same rows 0-shot: its flexible-extract filter finds True/False in a response (the few-shot
    # config's strict exact match counts " False" as wrong: lm-eval PR #2502)
    "bbh_zeroshot_boolean_expressions": ("bbh/zeroshot/boolean_expressions.yaml",
                                         {"test": "bbh_boolean_expressions.jsonl"}, "tag: []\n", 16),
    # lm-eval opens every split its config names (train, validation, test); LogiQA is 0-shot and
    # evaluates test, so the other two only need to exist: the same file
    "logiqa": ("logiqa/logiqa.yaml", {s: "logiqa_test.jsonl" for s in ("train", "validation", "test")}, "", 5),
}


def write_task_yamls(folder: Path) -> None:
    """One ``local_NAME.yaml`` per task: lm-eval's own config on the committed rows."""
    catalogue = Path(__import__("lm_eval").__file__).parent / "tasks"
    folder.mkdir(parents=True, exist_ok=True)
    for name, (yaml, splits, extra, _) in TASKS.items():
        files = {split: str(DATA / f) for split, f in splits.items()}
        (folder / f"local_{name}.yaml").write_text(local_task_yaml(f"local_{name}", catalogue / yaml, files, extra))


def per_format_intervals(run: Path, spread: dict) -> list[dict]:
    """Each evaluated format's template, metrics and their 95% bootstrap intervals (the runner's
    ``uncertainty`` on that format's per-document rows)."""
    rows = read_jsonl(run / "format_samples.jsonl", required=["format_id", "doc_id", "metrics"])
    out = []
    for f in spread["formats"]:
        if not f["evaluated"]:
            continue
        mine = [r for r in rows if r["format_id"] == f["format_id"]]
        out.append({"format_id": f["format_id"], "original": f["original"], "format": f["format"],
                    "metrics": f["metrics"], "n": len(mine),
                    "uncertainty": {m: uncertainty(mine, m, SEED) for m in f["metrics"]}})
    return out


def run_task(name: str, limit: int, include: Path, runs: Path, reuse: bool) -> dict:
    """One ``llmgen eval --formats`` run (or the finished one with ``--reuse``) and its summary."""
    run = runs / name
    if not (reuse and (run / "results.json").exists()):
        argv = [str(Path(sys.executable).with_name("llmgen")), "eval", "--model", "default",
                "--tasks", f"lmeval:local_{name}", "--include-path", str(include), "--formats", str(FORMATS),
                "--limit", str(limit), "--seed", str(SEED), "--output-dir", str(run), "--overwrite"]
        wall = run_logged(argv, runs / f"{name}.log")
        (run / "wall_s.txt").write_text(f"{wall:.1f}\n")
    wall = float((run / "wall_s.txt").read_text())
    res = json.loads((run / "results.json").read_text())
    task = f"lmeval:local_{name}"
    spread = res["format_spread"][task]
    return {"task": name, "n_docs": res["n_samples"][task], "wall_s": round(wall, 1),
            "summary": spread["summary"], "original_uncertainty": res["uncertainty"][task],
            "formats": per_format_intervals(run, spread)}


def ci(u: dict) -> str:
    return f"[{u['ci_low']:.3f}, {u['ci_high']:.3f}]"


def table(results: list[dict]) -> str:
    """Markdown: one row per (task, metric) with original (its interval), min / median / max (the
    intervals of the worst and best formats) and spread."""
    lines = ["| task | metric | docs | original [95% CI] | min [95% CI] | median | max [95% CI] | spread | formats | wall |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for metric, s in r["summary"].items():
            vals = {f["format_id"]: f for f in r["formats"]}
            worst = min(vals.values(), key=lambda f: (f["metrics"][metric], f["format_id"]))
            best = max(vals.values(), key=lambda f: (f["metrics"][metric], -f["format_id"]))
            lines.append(
                f"| {r['task']} | {metric} | {r['n_docs']} | {s['original']:.3f} {ci(vals[0]['uncertainty'][metric])} "
                f"| {s['min']:.3f} {ci(worst['uncertainty'][metric])} | {s['median']:.3f} "
                f"| {s['max']:.3f} {ci(best['uncertainty'][metric])} | {s['spread']:.3f} | {s['formats']} "
                f"| {r['wall_s'] / 60:.1f} min |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--limit", nargs="*", default=[], help="NAME=N documents (default: the TASKS table's)")
    p.add_argument("--runs", default=str(ROOT / "runs" / "format_spread_catalogue"))
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "format_spread_catalogue.json"))
    p.add_argument("--reuse", action="store_true", help="keep finished runs")
    args = p.parse_args()
    limits = {n: TASKS[n][3] for n in TASKS} | {k: int(v) for k, v in (x.split("=", 1) for x in args.limit)}
    runs = Path(args.runs)
    include = runs / "tasks"
    write_task_yamls(include)
    started = time.time()
    results = [run_task(n, limits[n], include, runs, args.reuse) for n in args.tasks]
    out = {"model": "default (SmolLM2-135M-Instruct)", "formats": FORMATS, "seed": SEED,
           "lm_eval": __import__("lm_eval").__version__, "total_s": round(time.time() - started, 1), "tasks": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()

"""Benchmark (not a test): does unseen-instruction accuracy rise sharply with instruction count?

Only-IF's central claim, at toy scale on CPU: train tiny Llama-shaped models from scratch on
Markov string rewriting with a *fixed* example budget, varying only how many distinct rules
share it, and score exact match on rules never seen in training. Writes the sweep folder
(resumable: rerunning skips finished cells) and ``docs/benchmarks/instruction_diversity.md`` with
the table, the plot and a plain reading of the result.

    .venv/bin/python bench/instruction_diversity.py [--out runs/bench_instruction_diversity] [--steps N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks" / "instruction_diversity.md"
PLOT = ROOT / "docs" / "benchmarks" / "instruction_diversity.png"


def bench_config(out: str, steps: int, grid: list[int], budget: int):
    from llmgen.recipes.instruction_diversity import SweepConfig
    from llmgen.recipes.instruction_diversity.markov import MarkovConfig

    # Fixed lengths as in the paper (there 50/20), shrunk for CPU; the compact prompt frame keeps
    # sequences at ~32 tokens so a cell trains in a few minutes on one shared core.
    task = MarkovConfig(alphabet="abcdef", input_length=(8, 8), pattern_length=(2, 2), budget=budget,
                        noop_fraction=0.25, test_noop_fraction=0.5, test_instructions=100,
                        test_examples_per_instruction=4, prompt_style="compact", seed=0)
    return SweepConfig(output_dir=out, task=task, num_instructions=grid, seeds=[0], hidden_size=64,
                       intermediate_size=256, num_layers=3, num_heads=2, lr=2e-3, max_steps=steps,
                       batch_size=32, warmup_ratio=0.05, weight_decay=0.01, seen_eval_examples=200,
                       torch_threads=1)


def dataset_demo(out: Path) -> dict:
    """The real-data measures on a small templated two-domain instruction set.

    No instruction dataset ships offline, so this builds one with a redundant "specialist" domain
    (code requests from few templates) and a smaller general domain, then compares a 24-item
    diversity-selected mix with a random 24-item subset.
    """
    import json

    from llmgen.recipes.instruction_diversity import DatasetDiversityConfig, run_dataset_diversity

    tasks = ["reverses a string", "sorts a list of numbers", "checks whether a number is prime",
             "counts the words in a sentence", "merges two dictionaries", "parses a date string"]
    frames = ["Write a Python function that {}.", "Implement a Python function which {}.",
              "Please write Python code that {}.", "Create a function in Python that {}."]
    general = ["What is the capital of Australia?", "Give me three tips for sleeping better.",
               "Summarise the plot of Romeo and Juliet.", "Translate 'good morning' into Spanish.",
               "Why is the sky blue?", "Write a haiku about autumn.", "Explain inflation to a child.",
               "Suggest a name for a bakery.", "How do vaccines work?", "Plan a weekend trip to Rome.",
               "What causes earthquakes?", "Write a short thank-you note to a teacher."]
    out.mkdir(parents=True, exist_ok=True)
    code_path, gen_path = out / "code.jsonl", out / "general.jsonl"
    code_path.write_text("".join(json.dumps({"instruction": f.format(t)}) + "\n" for t in tasks for f in frames))
    gen_path.write_text("".join(json.dumps({"instruction": g}) + "\n" for g in general))
    return run_dataset_diversity(DatasetDiversityConfig(data=[str(code_path), str(gen_path)], select_size=24,
                                                        output_dir=str(out / "report")))


def dataset_section(res: dict) -> str:
    def row(name: str, r: dict) -> str:
        return (f"| {name} | {r['n']} | {r['num_clusters']} | {r['mean_pairwise_distance']:.3f} | "
                f"{r['vendi_score']:.2f} |\n")

    sel, code = res["selection"], res["domains"]["code"]
    body = row("all", res["overall"]) + "".join(row(f"domain `{d}`", r) for d, r in res["domains"].items())
    body += row(f"diversity-selected subset {sel['domains']}", sel["selected"])
    body += row("random subset", sel["random_subset"])
    return f"""
## Real-data diversity measures (demonstration)

`llmgen instruction-diversity dataset` on a small templated set (no instruction dataset is available offline):
a redundant code domain (6 tasks × 4 phrasings) and a general domain (12 questions), embedded with
all-MiniLM-L6-v2 (mean pooling, L2 norm). Clusters: average linkage cut at cosine distance
{res['overall']['cluster_threshold']}. Selection: equal per-domain quotas, greedy farthest-point.

| set | n | clusters | mean cosine distance | Vendi |
|---|---:|---:|---:|---:|
{body}
Paraphrases of the same code task sit together, so the code domain's {code['n']} rows form
{code['num_clusters']} clusters (Vendi {code['vendi_score']:.1f}); the selected subset keeps both domains and
avoids near-duplicates (Vendi {sel['selected']['vendi_score']:.1f} vs {sel['random_subset']['vendi_score']:.1f} for a
random subset of the same size), which is the paper's point for mixing general data into a specialist set.
"""


def write_doc(cfg, result: dict, seconds: float, demo: dict | None = None) -> str:
    from llmgen.recipes.instruction_diversity import markdown_table

    table = result["table"]
    first, last = table[0], table[-1]
    best = max(table, key=lambda r: r["unseen_accuracy"])
    rise = last["unseen_accuracy"] - first["unseen_accuracy"]
    jumps = [(a, b, b["unseen_accuracy"] - a["unseen_accuracy"]) for a, b in zip(table, table[1:], strict=False)]
    a, b, jump = max(jumps, key=lambda x: x[2]) if jumps else (first, first, 0.0)
    rw_first, rw_last = first["unseen_accuracy_rewrite"] or 0.0, last["unseen_accuracy_rewrite"] or 0.0
    if rise >= 0.3 and jump >= 0.25:
        verdict = (f"**Yes, in the paper's direction.** Unseen-rule accuracy goes from "
                   f"{first['unseen_accuracy']:.2f} with {first['num_instructions']} instructions to "
                   f"{last['unseen_accuracy']:.2f} with {last['num_instructions']}; the sharpest step is "
                   f"{a['num_instructions']} → {b['num_instructions']} (+{jump:.2f}).")
    elif rw_last - rw_first >= 0.15:
        verdict = (f"**Partly.** On unseen rules, *rewrite* accuracy rises with the number of instructions, "
                   f"from {rw_first:.2f} ({first['num_instructions']} instructions) to {rw_last:.2f} "
                   f"({last['num_instructions']}), so more distinct rules do teach the model to read the rule. "
                   f"But no-op accuracy falls ({first['unseen_accuracy_noop']:.2f} → "
                   f"{last['unseen_accuracy_noop']:.2f}): models trained on few rules mostly copy the input, "
                   f"which is right for every no-op, while diverse models apply rules more eagerly, also "
                   f"where the pattern is absent. Overall unseen exact match therefore stays flat "
                   f"({first['unseen_accuracy']:.2f} → {last['unseen_accuracy']:.2f}); there is no sharp "
                   f"transition at this scale and training length (seen-rule accuracy "
                   f"{last['seen_accuracy']:.2f} at {last['num_instructions']} rules shows the largest "
                   f"cells are under-trained).")
    elif rise > 0.05:
        verdict = (f"**Partly.** Unseen-rule accuracy rises from {first['unseen_accuracy']:.2f} "
                   f"({first['num_instructions']} instructions) to {last['unseen_accuracy']:.2f} "
                   f"({last['num_instructions']}), best {best['unseen_accuracy']:.2f} at "
                   f"{best['num_instructions']}, but without a sharp transition at this scale.")
    else:
        verdict = (f"**No, not at this scale.** Unseen-rule accuracy stays between "
                   f"{min(r['unseen_accuracy'] for r in table):.2f} and {best['unseen_accuracy']:.2f} "
                   f"across {first['num_instructions']}–{last['num_instructions']} instructions.")
    t = cfg.task
    return f"""# Only-IF at toy scale: instruction diversity vs generalisation (CPU)

`bench/instruction_diversity.py`; sweep folder `runs/{Path(cfg.output_dir).name}` (resumable). The cells took
{sum(c["seconds"] for c in result["cells"]) / 60:.1f} min of wall time in total (one torch thread each, up
to two cells at a time, on a busy shared 2-core CPU).

**Setup.** Markov rewriting (`llmgen.recipes.instruction_diversity.markov`): rule `x -> y` rewrites the leftmost occurrence of `x`,
no-op otherwise. Alphabet `{t.alphabet}`, inputs {t.input_length[0]} chars, patterns and
replacements {t.pattern_length[0]} chars, compact prompt `{'x' * t.pattern_length[0]}>{'y' * t.pattern_length[0]}|input=` → ` output`. Fixed budget of
{t.budget} training examples split evenly over N distinct rules; {t.noop_fraction:.0%} no-ops in
training. Test: {t.test_instructions} rules never seen in training × {t.test_examples_per_instruction}
inputs, half no-ops, identical for every N. Model: Llama-shaped, {cfg.num_layers} layers, width
{cfg.hidden_size}, {cfg.num_heads} heads, random init, byte tokenizer; AdamW lr {cfg.lr:g}, linear
schedule, {cfg.max_steps} steps of batch {cfg.batch_size} (shared training loop, loss on the answer
only); greedy decoding; exact match. "seen" = fresh inputs for training rules. One seed per cell.

**Result.** {verdict}

{markdown_table(table)}
![unseen-instruction accuracy vs number of instructions](instruction_diversity.png)

**Reading it.** With few rules the model has many examples per rule and fits them (seen-rule
accuracy), but it has no reason to read the rule from the prompt, so unseen rules fail; no-op
accuracy is the share of unseen inputs it copies unchanged. Paper scale for comparison (not run
here): inputs 50 / patterns 20, budget 10^6, 6×256×4 GPT-2, transition near 400 rules
(`SweepConfig.paper()` / `llmgen instruction-diversity sweep --paper`). Toy numbers are single-seed and
short-trained: read the direction, not the exact location of the transition.
""" + (dataset_section(demo) if demo else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench_instruction_diversity"))
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--budget", type=int, default=20_000)
    parser.add_argument("--grid", default="10,40,160,640")
    parser.add_argument("--workers", type=int, default=2,
                        help="Processes, each running part of the grid (cells are separate files).")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    from llmgen.recipes.instruction_diversity import run_sweep

    grid = [int(x) for x in args.grid.split(",")]
    cfg = bench_config(args.out, args.steps, grid, args.budget)
    t0 = time.perf_counter()
    if args.workers > 1 and len(grid) > 1 and not args.worker:
        # Each worker is a sweep over a slice of the grid into the same folder; the final sweep
        # below then finds every cell done and only assembles the table and plot.
        procs = [subprocess.Popen([sys.executable, __file__, "--out", args.out, "--steps", str(args.steps),
                                   "--budget", str(args.budget), "--workers", "1", "--worker",
                                   "--grid", ",".join(map(str, grid[i::args.workers]))])
                 for i in range(args.workers)]
        if any(p.wait() for p in procs):
            raise SystemExit("a worker failed; rerun to resume the missing cells")
    result = run_sweep(cfg)
    if args.worker:
        return
    seconds = time.perf_counter() - t0
    DOC.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(result["output_dir"]) / "accuracy_vs_instructions.png", PLOT)
    demo = dataset_demo(Path(args.out) / "dataset_demo")
    DOC.write_text(write_doc(cfg, result, seconds, demo), encoding="utf-8")
    print(Path(result["output_dir"], "results.md").read_text())
    print(f"wrote {DOC} and {PLOT} ({seconds / 60:.1f} min)")


if __name__ == "__main__":
    main()

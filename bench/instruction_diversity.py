"""Reproduction driver (not a test): does unseen-instruction accuracy rise sharply with instruction count?

Only-IF (Zhang, Wang, Charton 2024), Fig. 2a, at CPU scale: train Llama-shaped models from scratch on
Markov string rewriting with a *fixed* example budget, varying only how many distinct rules share
it; every training and test input contains its rule's pattern (the paper's setting, no no-ops); score
exact match on rules never seen in training. Runs the committed config
(``recipes/instruction_diversity/configs/cpu.yaml``, seeds 0, 1, 2 in the file) through the CLI,
then writes ``docs/benchmarks/instruction_diversity.md`` with 95% t intervals across seeds and the plot.

    .venv/bin/python bench/instruction_diversity.py

The sweep folder is resumable: a rerun skips finished cells.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict
from pathlib import Path

from seeds import ROOT, band_plot, direction, fmt, llmgen_command, run_logged, verdict

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CONFIG = ROOT / "recipes" / "instruction_diversity" / "configs" / "cpu.yaml"
DOC = ROOT / "docs" / "benchmarks" / "instruction_diversity.md"
PLOT = ROOT / "docs" / "benchmarks" / "instruction_diversity.png"
METRICS = (("unseen_accuracy", "unseen acc"), ("seen_accuracy", "seen acc"), ("final_loss", "final loss"))


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


def by_instructions(cells: list[dict]) -> dict[int, list[dict]]:
    """Cells grouped by number of instructions, each group ordered by seed."""
    groups: dict[int, list[dict]] = defaultdict(list)
    for c in sorted(cells, key=lambda c: (c["num_instructions"], c["seed"])):
        groups[c["num_instructions"]].append(c)
    return dict(sorted(groups.items()))


def report(cfg: dict, cells: list[dict], config: str, demo: dict | None) -> tuple[str, str]:
    """The Markdown page and the one-line verdict for docs/benchmarks.md."""
    groups = by_instructions(cells)
    ns = list(groups)
    seeds = sorted({c["seed"] for c in cells})
    acc = {n: [c["unseen_accuracy"] for c in g] for n, g in groups.items()}
    small, large = [n for n in ns if n <= 100], [n for n in ns if n >= 1000]
    # The paper's shape: below ~300 instructions nothing generalises, from ~1000 everything does. Shown
    # when unseen accuracy at >= 1000 instructions is above that at <= 100 (per-seed difference, 95% t).
    rises = [b["unseen_accuracy"] - a["unseen_accuracy"]
             for a, b in zip(groups[small[0]], groups[large[-1]], strict=True)] if small and large else []
    jumps = [(a, b, sum(acc[b]) / len(acc[b]) - sum(acc[a]) / len(acc[a])) for a, b in zip(ns, ns[1:], strict=False)]
    a, b, jump = max(jumps, key=lambda x: x[2]) if jumps else (ns[0], ns[0], 0.0)
    checks = [bool(rises) and direction(rises, +1), jump >= 0.3]
    word = verdict(checks)
    t, minutes = cfg["task"], sum(c["seconds"] for c in cells) / 60
    tr = cfg.get("train", cfg)  # training settings: nested under `train` once recipes nest TrainConfig
    lines = [
        "# Only-IF at CPU scale: instruction diversity vs generalisation, 3 seeds",
        "",
        f"**Result: {word}.** Unseen-rule exact match with {small[0] if small else ns[0]} instructions vs "
        f"{large[-1] if large else ns[-1]}: per-seed change {fmt(rises) if rises else '–'} (95% t interval across "
        f"{len(seeds)} seeds); the largest step of the mean is {a} → {b} instructions ({jump:+.3f}). Shown means "
        "the change's interval is above zero *and* one step between neighbouring grid points is at least 0.3, "
        "the paper's sharp transition (the 0.3 threshold is this driver's, not the paper's). The paper's "
        f"transition lies between ~300 and ~1000 instructions (inputs 50, patterns 20, budget 10^6); here the step is "
        f"{a} → {b}, on a much smaller task. Seen-rule accuracy falls as the fixed budget spreads over more rules.",
        "",
        "| instructions | examples/instr. | seeds | " + " | ".join(m[1] for m in METRICS) + " |",
        "|---:|---:|---:|" + "---:|" * len(METRICS),
    ]
    for n, g in groups.items():
        lines.append(f"| {n} | {g[0]['examples_per_instruction']:g} | {len(g)} | "
                     + " | ".join(fmt([c[k] for c in g if c.get(k) is not None]) for k, _ in METRICS) + " |")
    lines += [
        "", "Cells are mean [95% t interval] across seeds; a seed changes the rules, the data and the model's "
        "initialisation, while the unseen test rules are shared by every cell of that seed.", "",
        "![unseen-instruction accuracy vs number of instructions, mean and 95% band](instruction_diversity.png)",
        "",
        "## Setup",
        "",
        "| | paper (Fig. 2a) | this run |",
        "|---|---|---|",
        f"| task | inputs 50, patterns 20, alphabet 26 | inputs {t['input_length'][0]}, patterns "
        f"{t['pattern_length'][0]}, alphabet `{t['alphabet']}`, prompt style `{t['prompt_style']}` |",
        f"| no-ops | none (every input holds the pattern) | train {t['noop_fraction']:.0%}, test {t['test_noop_fraction']:.0%} |",
        f"| budget | 10^6 examples | {t['budget']} examples |",
        f"| model | GPT-2 shape, 6 layers, width 256, 4 heads | Llama shape, {cfg['num_layers']} layers, width "
        f"{cfg['hidden_size']}, {cfg['num_heads']} heads, random init, byte tokenizer |",
        f"| training | AdamW lr 1e-3, linear, 50 epochs | AdamW lr {tr['lr']:g}, linear, warm-up "
        f"{tr['warmup_ratio']:g}, {tr['max_steps'] or tr['epochs']} {'steps' if tr['max_steps'] else 'epochs'} "
        f"of batch {tr['batch_size']} |",
        f"| test | unseen rules | {t['test_instructions']} unseen rules × {t['test_examples_per_instruction']} inputs, "
        "greedy, exact match |",
        "",
        f"Config `{Path(config).relative_to(ROOT) if Path(config).is_absolute() else config}`; "
        f"{len(cells)} cells, {minutes:.1f} min of training and evaluation in all (one torch thread, shared "
        "2-core CPU). Paper scale: `recipes/instruction_diversity/configs/gpu.yaml`.",
        "",
    ]
    summary = (f"{word}: unseen acc {small[0] if small else ns[0]} → {large[-1] if large else ns[-1]} instructions "
               f"{fmt(acc[ns[0]], 2)} → {fmt(acc[ns[-1]], 2)} ({len(seeds)} seeds, 95% t)")
    return "\n".join(lines) + (dataset_section(demo) if demo else ""), summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(CONFIG))
    p.add_argument("--override", nargs="*", default=[], help="extra key=value overrides")
    p.add_argument("--runs", default=str(ROOT / "runs" / "repro" / "instruction_diversity"))
    p.add_argument("--no-run", action="store_true", help="only rebuild the page from the sweep folder's finished cells")
    p.add_argument("--no-demo", action="store_true", help="skip the real-data diversity demonstration")
    args = p.parse_args()

    from llmgen.io import atomic_write_text

    if not args.no_run:
        argv = llmgen_command("instruction-diversity sweep", args.config, [f"output_dir={args.runs}", *args.override])
        print(" ".join(argv), flush=True)
        run_logged(argv, Path(args.runs).with_suffix(".log"))
    # Every finished cell writes cells/<key>.json, so a sweep cut short still gives its finished columns.
    cells = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(Path(args.runs, "cells").glob("*.json"))]
    cfg = json.loads(Path(args.runs, "config.json").read_text(encoding="utf-8"))
    complete = {n for n, g in by_instructions(cells).items() if len(g) == len(cfg["seeds"])}
    cells = [c for c in cells if c["num_instructions"] in complete]
    groups = by_instructions(cells)
    ns = list(groups)
    series = {label: [[next(c[key] for c in groups[n] if c["seed"] == s) for n in ns]
                      for s in sorted({c["seed"] for c in cells})]
              for key, label in (("unseen_accuracy", "unseen rules"), ("seen_accuracy", "seen rules"))}
    band_plot(PLOT, ns, [("exact match", series)], "distinct training instructions (fixed budget)",
              "Only-IF, Markov rewriting: mean and 95% t band across seeds", logx=True)
    demo = None if args.no_demo else dataset_demo(Path(args.runs) / "dataset_demo")
    text, summary = report(cfg, cells, args.config, demo)
    atomic_write_text(DOC, text)
    print(summary)
    print(f"wrote {DOC} and {PLOT}")


if __name__ == "__main__":
    main()

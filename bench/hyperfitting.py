"""Reproduction driver (not a test): hyperfitting's effect over epochs, 3 seeds, 95% intervals.

Carlsson et al. (ICLR 2025): training a pretrained LM to near-zero loss on a few sequences makes
its teacher-forced predictive entropy on held-out text collapse and its greedy continuations stop
looping (higher type-token ratio), while held-out perplexity gets worse. This driver runs the
committed CPU config (``recipes/hyperfitting/configs/cpu.yaml``: SmolLM2-135M, 8 x 128-token
``stdlib`` sequences, 20 epochs at lr 1e-4, measured every 4 epochs) once per seed through the CLI,
then writes ``docs/benchmarks/hyperfitting.md`` and the plot from the run folders' ``results.json``.

    .venv/bin/python bench/hyperfitting.py [--seeds 0 1 2] [--reuse]

``--reuse`` keeps seed folders that already hold a ``results.json`` (resume after an interruption).
"""

from __future__ import annotations

import json
from pathlib import Path

from seeds import (
    ROOT,
    band_plot,
    direction,
    fmt,
    interval,
    llmgen_command,
    run_logged,
    seed_parser,
    verdict,
)

CONFIG = ROOT / "recipes" / "hyperfitting" / "configs" / "cpu.yaml"
DOC = ROOT / "docs" / "benchmarks" / "hyperfitting.md"
PLOT = ROOT / "docs" / "benchmarks" / "hyperfitting" / "seeds_vs_epoch.png"
# The single-seed figure this doc showed before (base greedy -> hyperfitted greedy, epoch 0 -> 20).
PREVIOUS = {"ttr": (0.289, 0.520), "repetition_rate": (0.449, 0.127), "entropy": (1.827, 0.621),
            "heldout_perplexity": (25.7, 153.6)}
PREVIOUS_EPOCH10 = {"ttr": 0.508, "repetition_rate": 0.099, "entropy": 0.934, "heldout_perplexity": 76.2}
EPOCH_COLUMNS = (("train_loss", "train loss", 4), ("ttr", "greedy TTR", 3), ("repetition_rate", "repetition", 3),
                 ("entropy", "entropy, own greedy text", 3), ("heldout_entropy", "entropy, held-out (teacher forced)", 3),
                 ("heldout_perplexity", "held-out ppl", 1))


def run_seeds(args) -> list[dict]:
    """``results.json`` of every seed, running the CLI for those not done yet."""
    out = []
    for seed in args.seeds:
        folder = Path(args.runs) / f"seed{seed}"
        results = folder / "results.json"
        if not (args.reuse and results.is_file()):
            overrides = [f"{key}={seed}" for key in args.seed_keys] + [f"output_dir={folder}", *args.override]
            argv = llmgen_command("hyperfitting", args.config, overrides)
            print(" ".join(argv), flush=True)
            run_logged(argv, Path(args.runs) / f"seed{seed}.log")
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        out.append({"seed": seed, "config": config, **json.loads(results.read_text(encoding="utf-8"))})
    return out


def epoch_matrix(runs: list[dict], key: str) -> tuple[list[int], list[list[float]]]:
    """Epochs measured in every run and, per run, ``key`` at those epochs."""
    epochs = sorted(set.intersection(*({e["epoch"] for e in r["epochs"] if e.get(key) is not None} for r in runs)))
    return epochs, [[next(e[key] for e in r["epochs"] if e["epoch"] == ep) for ep in epochs] for r in runs]


def cli_check(runs: list[dict], folder: Path) -> str:
    """One sentence: does a ``llmgen hyperfitting --config`` run reproduce seed 0 at their common epochs?"""
    seed0 = next(r for r in runs if r["seed"] == 0)
    other = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    ref = {e["epoch"]: e for e in seed0["epochs"]}
    common = [e for e in other["epochs"] if e["epoch"] in ref]
    keys = [k for k, _, _ in EPOCH_COLUMNS]
    worst = max(abs(e[k] - ref[e["epoch"]][k]) for e in common for k in keys if e.get(k) is not None)
    return (f"`llmgen hyperfitting --config recipes/hyperfitting/configs/cpu.yaml train.seed={cfg['train']['seed']} "
            f"train.epochs={cfg['train']['epochs']:g}` (run folder `{folder.relative_to(ROOT) if folder.is_absolute() else folder}`; "
            f"the constant schedule makes its first epochs those of the 20-epoch run) gives seed 0's figures at epochs "
            f"{', '.join(str(e['epoch']) for e in common)}: largest difference over {', '.join(keys)} = {worst:.3g}"
            + (" (bit-identical)." if worst == 0 else "."))


def report(runs: list[dict], config: str, check: str | None = None) -> tuple[str, str]:
    """The Markdown page and the one-line verdict for docs/benchmarks.md."""
    n = len(runs)
    base = {k: [r["generators"]["base_greedy"][k] for r in runs] for k in PREVIOUS | {"heldout_entropy": 0}}
    final = {k: [r["generators"]["hyperfitted_greedy"][k] for r in runs] for k in base}
    change = {k: [f - b for f, b in zip(final[k], base[k], strict=True)] for k in base}
    checks = {"held-out entropy falls": direction(change["heldout_entropy"], -1),
              "greedy TTR rises": direction(change["ttr"], +1),
              "held-out perplexity rises": direction(change["heldout_perplexity"], +1)}
    word = verdict(list(checks.values()))
    minutes = [r["seconds"] / 60 for r in runs]
    lines = [
        f"# Hyperfitting on CPU (SmolLM2-135M-Instruct), {n} seed{'s' * (n > 1)}",
        "",
        "Paper: Carlsson et al., \"The Hyperfitting Phenomenon\" (ICLR 2025). Claim: fine-tuning a pretrained LM to",
        "near-zero training loss on a few sequences collapses its predictive entropy and makes long greedy",
        "continuations stop looping (higher type-token ratio), although held-out perplexity gets worse.",
        "",
        f"**Result: {word}** ({n} seed{'s' * (n > 1)}; intervals are 95% Student-t intervals of the mean across seeds, "
        "`llmgen.evals.stats.t_interval`, multiplier 4.30 at n = 3).",
        "",
        "| claim (base -> hyperfitted, per-seed change) | change, mean [95% CI] | in the paper's direction |",
        "|---|---|---|",
        f"| teacher-forced held-out entropy falls (nats) | {fmt(change['heldout_entropy'])} | "
        f"{'yes' if checks['held-out entropy falls'] else 'no'} |",
        f"| greedy TTR rises | {fmt(change['ttr'])} | {'yes' if checks['greedy TTR rises'] else 'no'} |",
        f"| held-out perplexity rises | {fmt(change['heldout_perplexity'], 1)} | "
        f"{'yes' if checks['held-out perplexity rises'] else 'no'} |",
        "",
        "## Setup (scaled down from the paper; the method is not)",
        "",
        "| | paper | this run |",
        "|---|---|---|",
        "| model | TinyLlama 1.1B … Llama 3.1 70B | SmolLM2-135M-Instruct (the embedded default), fp32, CPU |",
        "| data | 2000 random × 256-token sequences (fiction, WikiText, news) | 8 × 128-token chunks of the offline "
        "`stdlib` source (split `stream`: the first 20 chunks, split at random by the seed into 8 training "
        "and 12 held-out) |",
        "| training | 20 epochs, Adam lr 1e-6, no weight decay, batch 8 | 20 epochs, Adam lr **1e-4** (constant), "
        "no weight decay, batch **4** (40 steps), grad-clip 1.0 |",
        "| evaluation | 32-token prompts, greedy 256 tokens, TTR over the last 96 | 12 held-out 32-token prompts, "
        "96 greedy tokens (TTR over all of them), every 4 epochs; top-p 0.9 baseline |",
        "",
        "lr 1e-4 because 1e-6 does not reach near-zero loss in 40 steps. The seed sets the train/held-out split,",
        "the training order and the top-p sampling, so the three seeds train on different sequences.",
        "",
        f"Config: `{Path(config).relative_to(ROOT) if Path(config).is_absolute() else config}`. Command:",
        "",
        "    .venv/bin/python bench/hyperfitting.py            # = llmgen hyperfitting --config <cpu.yaml> train.seed=S, S = 0, 1, 2",
        "",
        f"Runs: {_provenance(runs)}",
        "",
        f"Wall time per seed (the recipe's own timing, one torch thread, 2-core machine shared with other jobs): "
        f"{', '.join(f'{m:.1f}' for m in minutes)} min; {sum(minutes):.1f} min in all.",
        "",
        "## Over epochs (greedy, the 12 held-out prompts; mean [95% CI] across seeds)",
        "",
        "| epoch | " + " | ".join(c[1] for c in EPOCH_COLUMNS) + " |",
        "|---" * (len(EPOCH_COLUMNS) + 1) + "|",
    ]
    cols = {key: dict(zip(*_by_epoch(runs, key), strict=True)) for key, _, _ in EPOCH_COLUMNS}
    for ep in sorted(set().union(*(c.keys() for c in cols.values()))):
        cells = [fmt(cols[k][ep], d) if ep in cols[k] else "–" for k, _, d in EPOCH_COLUMNS]
        lines.append(f"| {ep} | " + " | ".join(cells) + " |")
    lines += ["", f"![greedy TTR, held-out entropy and perplexity vs epoch, mean and 95% band over {n} seeds]"
              f"(hyperfitting/{PLOT.name})", "",
              "## Generators after training (mean [95% CI] across seeds)", "",
              "| metric | base greedy | base top-p (0.9) | hyperfitted greedy |", "|---|---|---|---|"]
    gens = ("base_greedy", "base_top_p", "hyperfitted_greedy")
    for key in runs[0]["generators"]["base_greedy"]:
        lines.append(f"| {key} | " + " | ".join(fmt([r["generators"][g][key] for r in runs]) for g in gens) + " |")
    seed0 = next((r for r in runs if r["seed"] == 0), None)
    if seed0 is not None:
        at10 = next((e for e in seed0["epochs"] if e["epoch"] == 10), None)
        same10 = at10 is not None and all(abs(at10[k] - v) <= 0.0015 * max(1.0, v) for k, v in PREVIOUS_EPOCH10.items())
        lines += ["", "## Seed 0 against the earlier single-seed figure (issue 13)", "",
                  "At epoch 10 seed 0 " + ("matches the earlier run to the printed digits (" if same10 else
                                           "differs from the earlier run (") + ", ".join(
                      f"{k} {at10[k]:.3f} vs {v:g}" for k, v in PREVIOUS_EPOCH10.items()) + ")." if at10 else
                  "Seed 0 has no epoch-10 point to compare with the earlier run's.", "",
                  f"| metric | earlier doc: base → hyperfitted | seed 0 now: base → hyperfitted | {n} seeds: hyperfitted |",
                  "|---|---|---|---|"]
        inside = []
        for key, (b, h) in PREVIOUS.items():
            now = (seed0["generators"]["base_greedy"][key], seed0["generators"]["hyperfitted_greedy"][key])
            lines.append(f"| {key} | {b:g} → {h:g} | {now[0]:.4g} → {now[1]:.4g} | {fmt(final[key])} |")
            _, low, high = interval(final[key])
            inside.append((key, low <= h <= high))
        lines += ["", "After epoch 10 the runs drift apart (near zero training loss, small numerical differences "
                  "grow), so the yardstick for \"within noise\" is the spread across seeds: the earlier "
                  "hyperfitted figures lie inside the 95% interval across seeds for "
                  + (", ".join(k for k, ok in inside if ok) or "none") + "; outside it for "
                  + (", ".join(k for k, ok in inside if not ok) or "none") + "."]
    if check is not None:
        lines += ["", "## The committed config through the CLI", "", check]
    lines += ["", "## Caveats", "",
              "- Scale: 8 training sequences, 12 prompts, 96 tokens against the paper's 2000 × 256 and 256-token",
              "  continuations; lr 1e-4 instead of 1e-6; a 135M instruct model. Read direction, not magnitude.",
              "- The prompts come from the same few `stdlib` pages as the training chunks (split `stream`), so",
              "  copying of training 5-grams (`train_overlap`) is higher than the paper reports.",
              "- Top-p sampling from the base model is still more diverse than hyperfitted greedy on TTR and",
              "  repetition; the paper's case rests on human judgements, which this benchmark does not make.",
              ""]
    summary = (f"{word}: held-out entropy {fmt(base['heldout_entropy'], 2)} → {fmt(final['heldout_entropy'], 2)} nats, "
               f"greedy TTR {fmt(base['ttr'], 2)} → {fmt(final['ttr'], 2)}, held-out ppl "
               f"{fmt(base['heldout_perplexity'], 1)} → {fmt(final['heldout_perplexity'], 1)} ({n} seeds, 95% t)")
    return "\n".join(lines), summary


def _provenance(runs: list[dict]) -> str:
    """Which seeds ran through ``llmgen hyperfitting --config`` (nested config.json) and which through
    the recipe's Python API before the recipes nested their training settings (flat config.json)."""
    cli = [r["seed"] for r in runs if "train" in r["config"]]
    api = [r["seed"] for r in runs if "train" not in r["config"]]
    parts = [f"seed(s) {', '.join(map(str, cli))} through `llmgen hyperfitting --config`"] if cli else []
    if api:
        parts.append(f"seed(s) {', '.join(map(str, api))} through the recipe's Python API with the same settings "
                     "(the bench driver before the config merge; `dump_config` of the committed config equals their "
                     "config.json apart from `eval_every` and `output_dir`)")
    return "; ".join(parts) + "."


def _by_epoch(runs: list[dict], key: str) -> tuple[list[int], list[list[float]]]:
    epochs, matrix = epoch_matrix(runs, key)
    return epochs, [list(col) for col in zip(*matrix, strict=True)]


def main() -> None:
    p = seed_parser(__doc__.splitlines()[0], CONFIG, "hyperfitting", DOC)
    p.add_argument("--seed-keys", nargs="+", default=["train.seed"], help="config keys the seed is written to")
    p.add_argument("--check", default=None, help="a `llmgen hyperfitting --config` run folder to compare with seed 0")
    args = p.parse_args()

    from llmgen.io import atomic_write_text

    runs = run_seeds(args)
    check = cli_check(runs, Path(args.check)) if args.check else None
    text, summary = report(runs, args.config, check)
    epochs, ttr = epoch_matrix(runs, "ttr")
    panels = [("greedy TTR", {"TTR": ttr}),
              ("entropy (nats)", {"held-out, teacher forced": epoch_matrix(runs, "heldout_entropy")[1],
                                  "own greedy text": epoch_matrix(runs, "entropy")[1]}),
              ("held-out perplexity", {"ppl": epoch_matrix(runs, "heldout_perplexity")[1]})]
    plot = Path(args.doc).parent / PLOT.parent.name / PLOT.name  # next to the page it belongs to
    band_plot(plot, epochs, panels, "epoch", f"Hyperfitting, SmolLM2-135M, {len(runs)} seeds (mean, 95% t band)")
    atomic_write_text(args.doc, text)
    print(summary)
    print(f"wrote {args.doc} and {plot}")


if __name__ == "__main__":
    main()

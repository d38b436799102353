"""Reproduction driver (not a test): CE vs DCO pass@k curves over epochs, 3 seeds, 95% intervals.

Chen et al. (2025), "Rethinking Fine-Tuning when Scaling Test-Time Compute": fine-tuning with
cross-entropy makes the model confident in wrong answers, so with more epochs pass@1 rises while
pass@N at large N falls; DCO(N), whose per-example weight F(N, p) vanishes on examples the model
already solves, keeps pass@N higher. This driver runs the committed CPU config
(``recipes/confidence_limiting/configs/cpu.yaml``) once per seed through the CLI,

    llmgen confidence-limiting --config recipes/confidence_limiting/configs/cpu.yaml train.seed=S

then writes ``docs/benchmarks/confidence_limiting.md``'s seed section and the band plot from the run
folders' ``results.json``:

    .venv/bin/python bench/confidence_limiting.py [--seeds 0 1 2] [--reuse] [--runs-only]

``--reuse`` keeps seed folders that already hold a ``results.json`` (resume after an interruption);
``--runs-only`` stops after the runs. ``toy-base`` builds the tiny from-scratch base model of the
earlier toy runs (``configs/bench.yaml``, ``bench_long.yaml``; the doc's "earlier toy runs").
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from seeds import ROOT, band_plot, direction, fmt, llmgen_command, run_logged, seed_parser, verdict

CONFIG = ROOT / "recipes" / "confidence_limiting" / "configs" / "cpu.yaml"
DOC = ROOT / "docs" / "benchmarks" / "confidence_limiting.md"
PLOT_DIR = "confidence_limiting"  # next to the doc
METHODS = ("ce", "dco")
MARK = "<!-- seeds: written by bench/confidence_limiting.py -->"
CLAIMS = ("CE's pass@N at large N falls with more epochs", "DCO's pass@N stays above CE's there")
SHORT = dict(zip(CLAIMS, ("CE's pass@N falls", "DCO above CE"), strict=True))


def seed_argv(config: str | Path, seed: int, folder: Path, extra: list[str] | None = None) -> list[str]:
    """The CLI call of one seed: the committed config, the seed, the seed's run folder."""
    return llmgen_command("confidence-limiting", config, [f"train.seed={seed}", f"output_dir={folder}", *(extra or [])])


def run_seeds(args) -> tuple[list[dict], float]:
    """``results.json`` of every seed (plus ``wall_s``, the CLI call's wall time), running those not done,
    and the seconds spent running them in this call."""
    out, ran = [], 0.0
    runs = Path(args.runs)
    for seed in args.seeds:
        folder = runs / f"seed{seed}"
        results, wall = folder / "results.json", runs / f"seed{seed}.wall_s"
        if not (args.reuse and results.is_file()):
            argv = seed_argv(args.config, seed, folder, args.override)
            print(" ".join(argv), flush=True)
            seconds = run_logged(argv, runs / f"seed{seed}.log")
            wall.write_text(f"{seconds:.1f}\n", encoding="utf-8")
            ran += seconds
        if not args.runs_only:
            data = json.loads(results.read_text(encoding="utf-8"))
            data["wall_s"] = float(wall.read_text(encoding="utf-8")) if wall.is_file() else data["timings"]["total_s"]
            out.append({"seed": seed, **data})
    return out, ran



# --- figures across seeds ------------------------------------------------------------------------

def curves(runs: list[dict]) -> tuple[list[int], list[int | float], dict[str, dict]]:
    """``(ks, epochs, per method {epoch: evaluation row per seed})``.

    The recipe evaluates both methods at the same optimizer steps (every epoch's worth of CE steps)
    and at the end of training. DCO's refill skips candidates, so its ``train.epochs`` passes over
    the training problems end after fewer steps (an epoch label such as 2.75): its end-of-training
    row stands at the last epoch, where CE's run also ends after the same passes over the data."""
    ks = runs[0]["ks"]
    end = runs[0]["config"]["train"]["epochs"]

    def at(run: dict, method: str, epoch: float) -> dict | None:
        hist = run["methods"][method]
        exact = next((h for h in hist if h["epoch"] == epoch), None)
        return hist[-1] if exact is None and epoch == end else exact

    measured = sorted(set.intersection(*({h["epoch"] for h in r["methods"]["ce"]} for r in runs)))
    epochs = [e for e in measured if all(at(r, m, e) is not None for r in runs for m in METHODS)]
    rows = {m: {e: [at(r, m, e) for r in runs] for e in epochs} for m in METHODS}
    return ks, epochs, rows


def passk(rows: list[dict], k: int) -> list[float]:
    """Per seed, the unbiased pass@k of one evaluation."""
    return [h["passk"][str(k)]["unbiased"] for h in rows]


def claims(runs: list[dict], large: list[int]) -> dict[str, dict[str, tuple[list[float], bool]]]:
    """The target shape as per-seed differences, each checked with ``direction``:

    1. CE's pass@k at large k falls with more epochs: CE(last epoch) - CE(epoch 1) < 0, per k;
    2. DCO's stays above CE's there: DCO - CE > 0 at every trained epoch, per k.
    """
    _, epochs, rows = curves(runs)
    trained = [e for e in epochs if e > 0]
    first, last = trained[0], trained[-1]
    one: dict[str, tuple[list[float], bool]] = {}
    two: dict[str, tuple[list[float], bool]] = {}
    for k in large:
        fall = [b - a for a, b in zip(passk(rows["ce"][first], k), passk(rows["ce"][last], k), strict=True)]
        one[f"pass@{k}, CE epoch {first} → {last}"] = (fall, direction(fall, -1))
        for e in trained:
            gap = [d - c for c, d in zip(passk(rows["ce"][e], k), passk(rows["dco"][e], k), strict=True)]
            two[f"pass@{k}, DCO - CE at epoch {e}"] = (gap, direction(gap, +1))
    return {CLAIMS[0]: one, CLAIMS[1]: two}


def overall_verdict(words: list[str]) -> str:
    """Both claims shown: ``shown``; neither shown even in part: ``not shown``; else ``partly``."""
    return "shown" if all(w == "shown" for w in words) else \
        "not shown" if all(w == "not shown" for w in words) else "partly"


def _e(x: float) -> str:
    """``1e-4`` rather than ``0.0001``."""
    return f"{x:.0e}".replace("e-0", "e-")


def _cell(values: list[float] | None, digits: int = 3) -> str:
    return "–" if values is None or any(v is None for v in values) else fmt(values, digits)


def report(runs: list[dict], config: str, plots: list[str], wall_s: float) -> tuple[str, str]:
    """The seed section of the Markdown page and the summary-table row for docs/benchmarks.md."""
    cfg = runs[0]["config"]
    ks, epochs, rows = curves(runs)
    n, big = cfg["dco_n"], ks[-1]
    large = [k for k in dict.fromkeys((n, big)) if k in ks]
    checked = claims(runs, large)
    words = {claim: verdict([ok for _, ok in checks.values()]) for claim, checks in checked.items()}
    overall = overall_verdict(list(words.values()))
    t = cfg["train"]
    seeds = ", ".join(str(r["seed"]) for r in runs)
    rel = Path(config).relative_to(ROOT) if Path(config).is_absolute() else Path(config)
    lines = [
        "# pass@N / DCO (Chen et al. 2025) on CPU: CE vs DCO, SmolLM2-135M-Instruct, "
        f"{len(runs)} seed{'s' * (len(runs) > 1)}",
        "",
        "Paper: Chen et al., \"Rethinking Fine-Tuning when Scaling Test-Time Compute: Limiting Confidence",
        "Improves Mathematical Reasoning\" (2025). Target shape: CE's pass@N at large N falls with more",
        "epochs (the model grows confident in wrong answers); DCO's stays above CE's there.",
        "",
        f"**Result: {overall}.** " + "; ".join(f"{claim}: **{w}**" for claim, w in words.items()) +
        f". Seeds {seeds}; every figure is the mean [95% Student-t interval] across seeds "
        "(`bench/seeds.py`, multiplier 4.30 at n = 3); a check holds when the interval of the per-seed "
        "difference excludes zero in the paper's direction.",
        "",
        "| check (per-seed difference) | mean [95% CI] | in the paper's direction |",
        "|---|---|---|",
    ]
    for checks in checked.values():
        for name, (values, ok) in checks.items():
            lines.append(f"| {name} | {fmt(values)} | {'yes' if ok else 'no'} |")
    first = [e for e in epochs if e > 0][0]
    rise = [b - a for a, b in zip(passk(rows["ce"][first], 1), passk(rows["ce"][epochs[-1]], 1), strict=True)]
    lines.append(f"| context, not a check: pass@1, CE epoch {first} → {epochs[-1]} (the paper: rises) | "
                 f"{fmt(rise)} | {'rises' if direction(rise, +1) else 'falls' if direction(rise, -1) else 'neither'} |")
    lines += [
        "",
        "## Setup (scaled down from the paper; the method is not)",
        "",
        "| | paper (allanraventos/refine) | this run |",
        "|---|---|---|",
        "| model | Llama-3-8B, full fine-tuning, bf16 | SmolLM2-135M-Instruct (the embedded default), full "
        "fine-tuning, fp32, CPU, one torch thread |",
        f"| data | MATH, 12,000 train / 500 test, direct answers | the generated arithmetic task "
        f"(`llmgen.tasks.math.generate_task`, difficulty {cfg['difficulty']}: multi-step word problems and "
        f"linear equations, answers 0..99), **{runs[0]['n_train']} train / {runs[0]['n_test']} test** problems "
        f"(task seed {cfg['task_seed']}: the same problems for every seed), direct answers |",
        f"| training | 6 epochs, AdamW lr 2e-5, effective batch 128, constant after 20 warm-up steps | "
        f"**{t['epochs']:g} epochs, AdamW lr {_e(t['lr'])}, batch {t['batch_size']}** (constant after "
        f"{t['warmup_steps']} warm-up steps), weight decay {t['weight_decay']:g}; CE and DCO each one run of "
        "the shared loop (one optimizer, one schedule) from the same base |",
        f"| DCO | N = 256, F recomputed per batch with the current model, F <= 0.1 dropped and the batch "
        f"refilled | N = {n}, the same (`refill_keep`), threshold {cfg['dco_threshold']}, loss the mean of "
        "F·NLL/|y| |",
        f"| evaluation | 256 samples at T = 1 per problem after every epoch | **{cfg['eval']['num_samples']} "
        f"samples** at T = {cfg['eval']['temperature']:g} (HF backend, ≤ {cfg['eval']['max_new_tokens']} new "
        "tokens) after every epoch; pass@k is the unbiased estimator, averaged over problems |",
        "",
        f"The cuts (data, test problems, epochs, batch) and lr {_e(t['lr'])} are in `{rel}`'s header, chosen "
        "before any run from the time one short run took: the paper's lr 2e-5 acts over ~560 optimizer steps "
        f"(12,000 / 128 × 6), this run has {runs[0]['methods']['ce'][-1]['step']}. The seed sets the training order, DCO's refill stream and "
        "the sampling; the training and test problems are the same for every seed, so the intervals "
        f"measure training and sampling noise, not the choice of the {runs[0]['n_test']} test problems.",
        "",
        "Command (the driver runs the CLI once per seed, then writes this section and the plots):",
        "",
        "    .venv/bin/python bench/confidence_limiting.py   # = llmgen confidence-limiting --config "
        f"{rel} train.seed=S, S = {seeds}",
        "",
        f"Wall time: {wall_s / 60:.1f} min for the {len(runs)} seeds ("
        + ", ".join(f"{r['wall_s'] / 60:.1f}" for r in runs) + " min each) on the 2-core CPU shared with "
        "other jobs (load average up to ~13), one torch thread, so per-seed times follow the load.",
        "",
        f"## pass@k after each epoch (k = {', '.join(map(str, ks))}; epoch 0 = the base model)",
        "",
        "| method | epoch | " + " | ".join(f"pass@{k}" for k in ks) + " |",
        "|---|---|" + "---|" * len(ks),
    ]
    for m in METHODS:
        for e in epochs:
            lines.append(f"| {m} | {e} | " + " | ".join(fmt(passk(rows[m][e], k)) for k in ks) + " |")
    ends = [(r["seed"], r["methods"]["dco"][-1]) for r in runs]
    lines += ["", f"DCO's row at epoch {epochs[-1]} is its end of training, after {t['epochs']:g} passes over the "
              "training problems like CE's; its refill skipped candidates (F <= threshold), so that came at "
              + ", ".join(f"step {h['step']} (epoch label {h['epoch']}, seed {seed})" for seed, h in ends)
              + f", against CE's step {runs[0]['methods']['ce'][-1]['step']}. Its earlier rows are at CE's steps."]
    lines += ["", f"Per seed (pass@{n} / pass@{big}; the base model's row differs only in its samples):", "",
              "| method | epoch | " + " | ".join(f"seed {r['seed']}" for r in runs) + " |",
              "|---|---|" + "---|" * len(runs)]
    for m in METHODS:
        for e in epochs:
            lines.append(f"| {m} | {e} | " + " | ".join(
                f"{a:.3f} / {b:.3f}" for a, b in zip(passk(rows[m][e], n), passk(rows[m][e], big), strict=True)) + " |")
    lines += ["", *(f"![{p}]({PLOT_DIR}/{p})" for p in plots), "",
              "## Confidence and training (mean [95% CI] across seeds)", "",
              "| method | epoch | greedy accuracy | confidence of wrong greedy answers | wrong with confidence > 0.5 "
              "| distinct answers of 64 | mean train loss (CE, or DCO's F-weighted NLL) | DCO candidates dropped (cumulative) |",
              "|---|---|---|---|---|---|---|---|"]
    for m in METHODS:
        for e in epochs:
            hs = rows[m][e]
            train = [h.get("train", {}) for h in hs]
            lines.append(f"| {m} | {e} | {_cell([h['greedy_accuracy'] for h in hs])} | "
                         f"{_cell([h['confidence_incorrect'] for h in hs])} | "
                         f"{_cell([h['overconfident_wrong'] for h in hs])} | "
                         f"{_cell([h['distinct_answers'] for h in hs], 1)} | "
                         f"{_cell([x.get('mean_loss') for x in train] if e else None, 4)} | "
                         f"{_cell([x.get('refill_dropped') for x in train] if m == 'dco' and e else None, 1)} |")
    ce_last = rows["ce"][epochs[-1]]
    summary = (f"**{overall}** ({len(runs)} seed{'s' * (len(runs) > 1)}, 95% t): " + "; ".join(f"{SHORT[c]}: {w}" for c, w in words.items())
               + f". CE pass@{big} epoch 1 → {epochs[-1]}: {fmt(passk(rows['ce'][epochs[1]], big))} → "
               f"{fmt(passk(ce_last, big))}; DCO − CE pass@{big} at epoch {epochs[-1]}: "
               f"{fmt(checked[CLAIMS[1]][f'pass@{big}, DCO - CE at epoch {epochs[-1]}'][0])}; "
               f"driver {wall_s / 60:.0f} min")
    return "\n".join(lines), summary


def plot(runs: list[dict], folder: Path) -> list[str]:
    """pass@k vs k after each epoch (one panel per method) and pass@k vs epoch at k = 1, N, max."""
    ks, epochs, rows = curves(runs)
    n = runs[0]["config"]["dco_n"]
    by_k = [(f"{m.upper()} pass@k", {f"epoch {e}": [list(v) for v in zip(*(passk(rows[m][e], k) for k in ks),
                                                                          strict=True)] for e in epochs})
            for m in METHODS]
    band_plot(folder / "seeds_passk_vs_k.png", ks, by_k, "k", "pass@k after each epoch, mean and 95% t band over "
              f"{len(runs)} seeds", logx=True)
    by_epoch = [(f"pass@{k}", {m.upper(): [list(v) for v in zip(*(passk(rows[m][e], k) for e in epochs),
                                                                strict=True)] for m in METHODS})
                for k in dict.fromkeys((1, n, ks[-1])) if k in ks]
    band_plot(folder / "seeds_passk_vs_epoch.png", epochs, by_epoch, "epoch", "CE vs DCO over epochs, mean and "
              f"95% t band over {len(runs)} seeds")
    return ["seeds_passk_vs_k.png", "seeds_passk_vs_epoch.png"]


def write_doc(doc: Path, section: str) -> None:
    """Replace the page's seed section, keeping everything from ``MARK`` on (the earlier runs)."""
    from llmgen.io import atomic_write_text

    old = doc.read_text(encoding="utf-8") if doc.is_file() else ""
    rest = old[old.index(MARK):] if MARK in old else MARK + "\n"
    atomic_write_text(doc, section.rstrip("\n") + "\n\n" + rest)


def main() -> None:
    p = seed_parser(__doc__.splitlines()[0], CONFIG, "confidence_limiting", DOC)
    p.add_argument("--runs-only", action="store_true", help="run the seeds, write no doc")
    args = p.parse_args()

    start = time.time()
    runs, ran = run_seeds(args)
    if args.runs_only:
        print(f"ran seeds {args.seeds} in {time.time() - start:.0f}s")
        return
    doc = Path(args.doc)
    plots = plot(runs, doc.parent / PLOT_DIR)
    # the seeds' CLI calls run one after another; a --reuse call adds its own seconds (the report)
    wall = sum(r["wall_s"] for r in runs) + time.time() - start - ran
    section, summary = report(runs, args.config, plots, wall)
    write_doc(doc, section)
    print(summary)
    print(f"wrote {doc} and {', '.join(plots)}")


if __name__ == "__main__":
    main()

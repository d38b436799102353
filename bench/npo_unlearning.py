"""CPU benchmark: GA vs NPO vs NPO+RT on a synthetic TOFU set with the embedded SmolLM2-135M.

Not a test. Stages (each cached in the output folder, so a rerun skips what is done):
1. take the synthetic TOFU set from llmgen's cache (10 authors x 8 facts with TOFU-length answers; forget = the last
   20% = 2 authors, 16 questions);
2. fine-tune the embedded model on ``full`` (the model to unlearn) and, separately, on the retain
   split only (the reference for forget quality), in the model's chat format, then save the retain
   model's "retain logs";
3. unlearn the forget split with GA, NPO and NPO+RT for the same steps (15 epochs of the forget
   set at batch 4), evaluating every 15 steps;
4. write ``docs/benchmarks/npo_unlearning.md`` with the table, the claims checked with numbers, the
   training-log trajectories and the plot path.

Run: ``.venv/bin/python bench/npo_unlearning.py [--out runs/bench_unlearning] [--threads 2]`` (about
30 minutes on 2 idle cores).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/bench_unlearning")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--authors", type=int, default=10, help="synthetic authors (8 facts each)")
    ap.add_argument("--forget-percent", type=int, default=20)
    ap.add_argument("--eval-limit", type=int, default=40, help="rows per evaluation set")
    ap.add_argument("--ft-epochs", type=float, default=3.0)
    ap.add_argument("--ft-lr", type=float, default=1e-4)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--eval-every", type=int, default=15)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--methods", default="ga,npo,npo_rt")
    ap.add_argument("--max-grad-norm", type=float, default=0.0, help="gradient clipping (0 = none)")
    ap.add_argument("--answer-style", default="long", choices=("short", "long"),
                    help="synthetic answers: one clause or TOFU-length (~35 tokens)")
    ap.add_argument("--max-length", type=int, default=160)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--beta", type=float, default=None, help="NPO β (None: the method default 0.1)")
    ap.add_argument("--prompt", default="chat",
                    help="prompt template: 'chat' (the model's chat format) or a template with {question}")
    ap.add_argument("--run-name", default="unlearn")
    ap.add_argument("--report-only", action="store_true", help="only rewrite --doc from the run's results.json")
    ap.add_argument("--doc", default="docs/benchmarks/npo_unlearning.md")
    args = ap.parse_args()

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from llmgen.io import atomic_write_text
    from llmgen.models import default_model_path
    from llmgen.recipes.npo_unlearning import UnlearnConfig, finetune, make_retain_logs, run
    from llmgen.tasks.tofu import SyntheticTofuConfig, synthetic_source

    out = Path(args.out)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    forget = f"forget{args.forget_percent:02d}"
    # the one synthetic source (llmgen's cache), with this benchmark's split and sizes
    data = synthetic_source(SyntheticTofuConfig(n_authors=args.authors, seed=0, forget_percents=(args.forget_percent,),
                                                retain_eval_size=args.eval_limit, answer_style=args.answer_style))
    # this benchmark's own schedule (constant lr, no warm-up, batch 8), not the TOFU defaults
    ft_kw = dict(epochs=args.ft_epochs, lr=args.ft_lr, batch_size=8, grad_accum=1, warmup_epochs=0.0,
                 max_length=args.max_length, weight_decay=0.0, prompt_template=args.prompt)
    models = {}
    for name, split in (("finetuned", "full"), ("retain_only", f"retain{100 - args.forget_percent}")):
        folder = out / name / "model"
        if not args.report_only and not (folder / "config.json").is_file():
            t = time.perf_counter()
            finetune(str(default_model_path()), str(data), split, str(out / name), **ft_kw)
            timings[f"finetune_{split}_s"] = time.perf_counter() - t
        models[name] = str(folder)
    logs = out / "retain_logs.json"
    if not args.report_only and not logs.is_file():
        make_retain_logs(models["retain_only"], str(data), forget, str(logs), eval_limit=args.eval_limit,
                         prompt_template=args.prompt)

    t = time.perf_counter()
    cfg = UnlearnConfig(model=models["finetuned"], data=str(data), forget_split=forget,
                        methods=args.methods.split(","), retain_logs=str(logs), steps=args.steps,
                        eval_every=args.eval_every, lr=args.lr, batch_size=args.batch_size, max_length=args.max_length,
                        max_new_tokens=args.max_new_tokens, eval_limit=args.eval_limit, beta=args.beta,
                        prompt_template=args.prompt, grad_accum=1, warmup_epochs=0.0, schedule="constant",
                        weight_decay=0.0, max_grad_norm=args.max_grad_norm or None,
                        output_dir=str(out / args.run_name))
    timing_file = out / args.run_name / "bench_timings.json"
    if args.report_only:  # rewrite the page from a finished run's results.json
        results = json.loads((out / args.run_name / "results.json").read_text())
        if timing_file.is_file():
            timings = json.loads(timing_file.read_text())
    else:
        results = run(cfg)
        timings["unlearn_s"] = time.perf_counter() - t
        timings["total_s"] = time.perf_counter() - t0
        atomic_write_text(timing_file, json.dumps(timings))
    atomic_write_text(args.doc, report(results, cfg, ft_kw, timings, out, args))
    print(json.dumps(timings, indent=1))
    print(Path(args.doc).read_text())


def _cli_args(args) -> list[str]:
    """The non-default arguments of this run, to print the command that reproduces it."""
    import sys

    argv, kept = sys.argv[1:], []
    skip = False
    for a in argv:  # drop what does not change the run: --report-only and --doc PATH
        if skip:
            skip = False
        elif a == "--doc":
            skip = True
        elif a != "--report-only" and not a.startswith("--doc="):
            kept.append(a)
    return ["bench/npo_unlearning.py", *kept]


def _log_windows(path: Path, every: int) -> str:
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    rows = [r for r in rows if "forget_logprob" in r]
    if not rows or every <= 0:
        return "no training log"
    parts = []
    for end in range(every, rows[-1]["step"] + 1, every):
        win = [r for r in rows if end - every < r["step"] <= end]
        lp = sum(r["forget_logprob"] for r in win) / len(win)
        w = [r["npo_weight"] for r in win if "npo_weight" in r]
        parts.append(f"steps {end - every + 1}-{end}: log-lik {lp:.1f}" + (f", weight {sum(w) / len(w):.2f}" if w else ""))
    return "; ".join(parts)


def _collapse_verdict(ga_frac: float, npo_frac: float) -> str:
    """The paper's claim in words, from the final utilities as fractions of the start value."""
    if ga_frac < 0.5 and npo_frac >= 0.8:
        return "GA collapses while NPO stays near its start: shown."
    if ga_frac < 0.1 and npo_frac >= 0.4:
        return ("GA collapses while NPO keeps a large part of its start utility: the gap is shown; "
                "'stays near its start' (≥ 80%) is not.")
    return "GA collapses, NPO stays near start: NOT shown at these settings."


def _best_fq_at_utility(curve: list[dict], floor: float) -> float | None:
    ok = [p["forget_quality"] for p in curve if p["step"] > 0 and p["model_utility"] >= floor]
    return max(ok) if ok else None


def report(results: dict, cfg, ft_kw: dict, timings: dict, out: Path, args) -> str:
    from llmgen.recipes.npo_unlearning import markdown_table

    start = results["start"]
    mu0, fq0 = start["model_utility"], start["forget_quality"]
    lines = [
        "# Unlearning benchmark: GA vs NPO vs NPO+RT (synthetic TOFU, SmolLM2-135M, CPU)", "",
        f"Produced by `bench/npo_unlearning.py` (`{' '.join(_cli_args(args))}`). Synthetic TOFU set: {args.authors} "
        f"fictitious authors x 8 facts with `{args.answer_style}` answers, forget split `{cfg.forget_split}` (the "
        f"last {args.forget_percent}% of authors); each evaluation set (forget, retain, real authors, world facts) "
        f"cut to {args.eval_limit} rows; 5 perturbed answers per forget/retain question, 3 for the utility sets. "
        f"Prompt: `{args.prompt}`.",
        f"Base model fine-tuned on `full` (full fine-tuning, {ft_kw}); the retain-only reference model "
        "is the same fine-tuning on the retain split.",
        f"Unlearning: full fine-tuning, {cfg.steps} steps, batch {cfg.batch_size}, lr {cfg.lr} (constant, "
        f"AdamW), β = 0.1, α = 1 (NPO+RT), gradient clipping {cfg.max_grad_norm}, evaluation every "
        f"{cfg.eval_every} steps.", "",
        f"Start (fine-tuned) model: forget quality {fq0:.3g}, model utility {mu0:.3f}.", "",
        "## Final eval point per method", "", markdown_table(results),
        "## Trajectories (step: forget quality / model utility)", "",
    ]
    for m, r in results["methods"].items():
        pts = ", ".join(f"{p['step']}: {p['forget_quality']:.3g} / {p['model_utility']:.3f}" for p in r["curve"])
        lines.append(f"- **{m}**: {pts}")
    lines += ["", "## Forget log-likelihood and NPO weight (training log, mean over the steps up to each eval)", "",
              "Summed answer log-likelihood of the forget batch, and NPO's per-example weight "
              "2σ(β(log πθ − log πref)) where the loss has one:", ""]
    for m in results["methods"]:
        lines.append(f"- **{m}**: " + _log_windows(out / args.run_name / m / "metrics.jsonl", cfg.eval_every))
    lines += ["", "## The paper's claims, checked", ""]
    ms = results["methods"]
    if "ga" in ms and "npo" in ms:
        ga_mu, npo_mu = ms["ga"]["final"]["model_utility"], ms["npo"]["final"]["model_utility"]
        lines.append(f"- After {cfg.steps} steps GA's model utility is {ga_mu:.3f} ({ga_mu / mu0:.0%} of the start "
                     f"{mu0:.3f}); NPO's is {npo_mu:.3f} ({npo_mu / mu0:.0%}). "
                     + _collapse_verdict(ga_mu / mu0, npo_mu / mu0))
        steps = [p["step"] for p in ms["ga"]["curve"]]
        by_step = {m: {p["step"]: p["model_utility"] for p in ms[m]["curve"]} for m in ("ga", "npo")}
        lines.append("- Model utility GA / NPO at each evaluation: " + ", ".join(
            f"step {st}: {by_step['ga'][st]:.3f} / {by_step['npo'].get(st, float('nan')):.3f}" for st in steps) + ".")
    if "ga" in ms and "npo_rt" in ms:
        for frac in (0.9, 0.8, 0.5):
            floor = frac * mu0
            g, n = _best_fq_at_utility(ms["ga"]["curve"], floor), _best_fq_at_utility(ms["npo_rt"]["curve"], floor)
            gs = "none" if g is None else f"{g:.3g}"
            ns = "none" if n is None else f"{n:.3g}"
            verdict = ("NPO+RT higher" if n is not None and (g is None or n > g) else
                       "GA higher or equal" if g is not None else "neither reaches it")
            lines.append(f"- Best forget quality among eval points with utility ≥ {frac:.0%} of start "
                         f"({floor:.3f}): GA {gs}, NPO+RT {ns} → {verdict}.")
    lines += ["", f"Plot (utility vs forget quality per method, and utility vs step): `{results['plot']}`.",
              f"Full results: `{out / args.run_name / 'results.json'}`, generations: `{out / args.run_name / 'samples.jsonl'}`.",
              "", "Wall time on this (shared, 2-core) machine: "
              + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

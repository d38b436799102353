"""lm-eval's own HF run vs `llmgen eval --tasks lmeval:...` on the same tasks, model and dtype.

Prints, per task and metric, both values and their difference, how many greedy generations are
identical, and both wall times (model load included on both sides; llmgen's request cache off, then
a second llmgen run answered from the cache).

    .venv/bin/python bench/lmeval_parity.py                      # the example tasks on the embedded model
    .venv/bin/python bench/lmeval_parity.py --tasks llmgen_demo --limit 8 --batch-size 8
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs" / "examples" / "tasks" / "lmeval"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="llmgen_arith_gen,llmgen_capitals_mc,llmgen_paragraphs_ppl")
    ap.add_argument("--include-path", default=str(EXAMPLES))
    ap.add_argument("--model", default="default")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args()
    os.chdir(ROOT)  # the example YAMLs name their data relative to the repository root
    os.environ["LLMGEN_LMEVAL_INCLUDE_PATH"] = args.include_path
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from lm_eval.models.huggingface import HFLM

    from llmgen.evaluate import EvalConfig, run_eval
    from llmgen.models import resolve_model
    from llmgen.tasks.lmeval import convert_results, run_lmeval

    names = [t for t in args.tasks.split(",") if t]
    model = resolve_model(args.model)

    t0 = time.time()
    lm = HFLM(pretrained=model, dtype=args.dtype, batch_size=args.batch_size, device="cpu")
    ref = run_lmeval(lm, names, limit=args.limit)
    t_ref = time.time() - t0
    del lm

    with tempfile.TemporaryDirectory() as tmp:
        cfg = EvalConfig(model=model, tasks=[f"lmeval:{n}" for n in names], limit=args.limit,
                         batch_size=args.batch_size, model_args={"dtype": args.dtype, "batch_size": args.batch_size},
                         cache=str(Path(tmp) / "cache.sqlite"))
        t1 = time.time()
        out = run_eval(cfg, show_progress=False)
        t_ours = time.time() - t1
        t2 = time.time()
        again = run_eval(cfg, show_progress=False)
        t_cached = time.time() - t2

    print(f"model {model} · dtype {args.dtype} · batch {args.batch_size} · limit {args.limit}")
    print(f"{'task':<28} {'metric':<22} {'lm-eval':>12} {'llmgen':>12} {'|diff|':>10}")
    worst = 0.0
    for n in names:
        expected = convert_results(n, {"results": {n: ref["results"][n]}})
        ours = out["results"].get(f"lmeval:{n}", {})
        for m, v in expected.items():
            mine = ours.get(m, float("nan"))
            worst = max(worst, abs(mine - v) / max(1.0, abs(v)))
            print(f"{n:<28} {m:<22} {v:>12.6g} {mine:>12.6g} {abs(mine - v):>10.2e}")
    for n, samples in ref["samples"].items():
        if samples and samples[0].get("resps") and isinstance(samples[0]["resps"][0][0], str):
            theirs = {s["doc_id"]: s["resps"][0][0] for s in samples}
            mine = {r["doc_id"]: r["responses"][0] for r in out["samples"] if r["task"] == f"lmeval:{n}"}
            same = sum(theirs[k] == mine.get(k) for k in theirs)
            print(f"{n}: {same}/{len(theirs)} greedy generations identical")
    print(f"wall time: lm-eval HF {t_ref:.1f} s · llmgen eval {t_ours:.1f} s (model load {out['timings']['load_s']} s) "
          f"· llmgen eval from cache {t_cached:.1f} s (hits {again['cache']['hits']}, misses {again['cache']['misses']})")
    print(f"largest relative metric difference: {worst:.2e}")
    sys.exit(0 if worst < 1e-4 else 1)


if __name__ == "__main__":
    main()

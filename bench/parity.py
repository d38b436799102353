"""Inner-loop parity with lm-evaluation-harness 0.4.13's HF backend: same model, same requests.

    pip install lm-eval==0.4.13   # optional; without it only llmgen's side runs
    python bench/parity.py                      # fp32, 200 + 200 requests, batch size 16
    python bench/parity.py --dtype bfloat16 --n 50

Phase 1: 200 greedy generations (the arithmetic task's 3-shot prompts, at most 16 tokens, stop at
"\\n" or "Question:"). Phase 2: 200 two-choice loglikelihood items (each prompt, " <answer>" vs
" <answer + 1>"). Each harness loads the model once; load time is not in the phase times. Printed:
per-phase seconds, the speed-up, and the metrics of both (exact match, accuracy), with how many
generated texts are identical and the largest loglikelihood difference. Times are wall seconds and
CPU seconds of this process (``time.process_time``), the steadier figure on a shared machine;
``--threads`` fixes torch's thread count, and lm-eval runs first unless ``--llmgen-first``.
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import contextmanager

from llmgen.tasks import get_task

STOP = ["\n", "Question:"]


def requests(n: int) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    task = get_task("arithmetic")
    docs = task.docs[:n]
    prompts = [task.build_prompt(d) for d in docs]
    pairs = [(p, f" {int(d['target']) + k}") for p, d in zip(prompts, docs, strict=True) for k in (0, 1)]
    return prompts, [d["target"] for d in docs], pairs


def exact_match(texts: list[str], targets: list[str]) -> float:
    task = get_task("arithmetic")
    return sum(task.is_correct(t, {"target": g}) for t, g in zip(texts, targets, strict=True)) / len(targets)


def accuracy(logprobs: list[float]) -> float:
    """Share of items whose first (correct) choice scores higher."""
    return sum(logprobs[i] > logprobs[i + 1] for i in range(0, len(logprobs), 2)) / (len(logprobs) // 2)


@contextmanager
def timed(out: dict, phase: str):
    """Record wall and CPU seconds of the block as ``<phase>_s`` and ``<phase>_cpu_s``."""
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    out[f"{phase}_s"] = time.perf_counter() - wall
    out[f"{phase}_cpu_s"] = time.process_time() - cpu


def run_llmgen(model: str, dtype: str, batch_size: int, prompts, pairs) -> dict:
    from llmgen.backends import SamplingConfig, get_backend

    out: dict = {}
    with timed(out, "load"):
        b = get_backend("hf", model, dtype=dtype, batch_size=batch_size)
    with timed(out, "generate"):
        out["texts"] = [g[0].text for g in b.generate(prompts, SamplingConfig(max_tokens=16, stop=tuple(STOP)))]
    with timed(out, "loglikelihood"):
        out["logprobs"] = [r.logprob for r in b.loglikelihood(pairs)]
    b.close()
    return out


def run_lm_eval(model: str, dtype: str, batch_size: int, prompts, pairs) -> dict:
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    out: dict = {}
    with timed(out, "load"):
        lm = HFLM(pretrained=model, dtype=dtype, batch_size=batch_size, device="cpu")
    gen_reqs = [Instance("generate_until", {}, (p, {"until": STOP, "max_gen_toks": 16, "do_sample": False}), i)
                for i, p in enumerate(prompts)]
    with timed(out, "generate"):
        out["texts"] = lm.generate_until(gen_reqs, disable_tqdm=True)
    ll_reqs = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    with timed(out, "loglikelihood"):
        out["logprobs"] = [lp for lp, _ in lm.loglikelihood(ll_reqs, disable_tqdm=True)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--skip-lm-eval", action="store_true")
    ap.add_argument("--llmgen-first", action="store_true")
    args = ap.parse_args()
    import torch

    from llmgen.models import resolve_model

    if args.threads:
        torch.set_num_threads(args.threads)
    model = resolve_model(args.model)
    prompts, targets, pairs = requests(args.n)
    harnesses = {"llmgen": run_llmgen} if args.skip_lm_eval else {"lm-eval": run_lm_eval, "llmgen": run_llmgen}
    order = sorted(harnesses, key=lambda h: (h != "llmgen") == args.llmgen_first)
    runs = {name: harnesses[name](model, args.dtype, args.batch_size, prompts, pairs) for name in order}
    print(f"{'':8} {'load s':>7} {'gen s':>7} {'gen cpu':>8} {'ll s':>7} {'ll cpu':>7} {'exact match':>12} {'acc':>6}")
    for name, r in runs.items():
        print(f"{name:8} {r['load_s']:7.2f} {r['generate_s']:7.2f} {r['generate_cpu_s']:8.2f} "
              f"{r['loglikelihood_s']:7.2f} {r['loglikelihood_cpu_s']:7.2f} "
              f"{exact_match(r['texts'], targets):12.3f} {accuracy(r['logprobs']):6.3f}")
    summary = {name: {k: v for k, v in r.items() if k.endswith("_s")} for name, r in runs.items()}
    if "lm-eval" in runs:
        a, b = runs["llmgen"], runs["lm-eval"]
        same = sum(x == y for x, y in zip(a["texts"], b["texts"], strict=True))
        diff = max(abs(x - y) for x, y in zip(a["logprobs"], b["logprobs"], strict=True))
        for unit in ("s", "cpu_s"):
            print(f"speed-up ({unit}) generate {b[f'generate_{unit}'] / a[f'generate_{unit}']:.2f}x  "
                  f"loglikelihood {b[f'loglikelihood_{unit}'] / a[f'loglikelihood_{unit}']:.2f}x")
        print(f"identical generations {same}/{len(prompts)}; largest |loglikelihood difference| {diff:.2e}")
        summary["identical_generations"], summary["max_logprob_diff"] = same, diff
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

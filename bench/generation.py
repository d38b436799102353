"""Generation throughput: the same prompts through HF and vLLM on one model, in one run.

    python bench/generation.py --num-prompts 64 --max-tokens 64            # greedy
    python bench/generation.py --num-prompts 8 --n 64 --temperature 1.0   # n=64 sampling

Tokens/s counts generated tokens only. Engine start-up and model loading are timed separately and
excluded from throughput. Results are printed and written as JSON (``--output``).
"""

from __future__ import annotations

import argparse
import time

from llmgen.backends import SamplingConfig, get_backend
from llmgen.io import atomic_write_json
from llmgen.tasks import get_task


def prompts_for(n: int) -> list[str]:
    task = get_task("arithmetic")
    return [task.build_prompt(d) for d in task.docs[:n]]


def measure(backend, prompts: list[str], sampling: SamplingConfig) -> dict:
    backend.generate(prompts[:2], SamplingConfig(max_tokens=4))  # warm-up
    t = time.perf_counter()
    outs = backend.generate(prompts, sampling)
    dt = time.perf_counter() - t
    tokens = sum(len(c.token_ids) for g in outs for c in g)
    return {"seconds": round(dt, 3), "generated_tokens": tokens, "tokens_per_s": round(tokens / dt, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--num-prompts", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--n", type=int, default=1)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--hf-batch-size", type=int, default=16)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--output", default="runs/bench_generation.json")
    args = ap.parse_args()
    prompts = prompts_for(args.num_prompts)
    # ignore_eos-like behaviour: no stop strings, fixed max_tokens, so both do comparable work
    sampling = SamplingConfig(n=args.n, temperature=args.temperature, max_tokens=args.max_tokens, seed=0)
    result = {"model": args.model, "num_prompts": len(prompts), "n": args.n, "max_tokens": args.max_tokens,
              "temperature": args.temperature, "dtype": args.dtype}
    t = time.perf_counter()
    hf = get_backend("hf", args.model, dtype=args.dtype, batch_size=args.hf_batch_size)
    result["hf_load_s"] = round(time.perf_counter() - t, 2)
    result["hf"] = measure(hf, prompts, sampling)
    hf.close()
    del hf
    t = time.perf_counter()
    vl = get_backend("vllm", args.model, dtype=args.dtype)
    result["vllm_start_s"] = round(time.perf_counter() - t, 2)
    result["vllm"] = measure(vl, prompts, sampling)
    vl.close()
    result["speedup_vllm_over_hf"] = round(result["vllm"]["tokens_per_s"] / result["hf"]["tokens_per_s"], 2)
    import torch

    result["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    atomic_write_json(args.output, result)
    print(result)


if __name__ == "__main__":
    main()

"""Where a short evaluation's wall time goes, llmgen against lm-eval on the same HF backend (issue 31).

    python bench/overhead.py                                  # bf16 + fp32, default threads + 1, 2 repeats
    python bench/overhead.py --dtypes bfloat16 --threads 0 --repeats 2 --limit 1 --out limit1.json
    python bench/overhead.py --before /tmp/old-checkout ...   # also "llmgen-before": that checkout's llmgen

The workload: two lm-eval task YAMLs written into a scratch folder with their data, 200 greedy
generations of at most 16 tokens (3-shot arithmetic, stop at "\\n" / "Question:") and 200 two-choice
items (the same prompts, the answer against the answer + 1). Each tool runs its own command line in
a subprocess at its defaults: ``llmgen eval --tasks lmeval:A,lmeval:B --include-path DIR`` (request
cache on, a fresh one per run) and ``lm_eval --model hf --tasks A,B --include_path DIR
--log_samples`` (batch size 1, its default), both on the embedded SmolLM2-135M. Runs interleave
(llmgen, lm-eval, llmgen, ...) so that a shared machine's load falls on both alike; ``--before DIR``
adds a third tool, the llmgen of another checkout (``DIR`` first on ``PYTHONPATH``, its ``cli/``,
``evals/`` and ``recipes/`` copied under ``DIR/llmgen`` as the installed package has them), in the
same rotation. ``--warmup`` runs llmgen once at ``--limit 1`` first, untimed, so that the first timed
run does not pay for ``datasets`` preparing the new data files.

Stages. llmgen's come from its own results.json ``timings`` (tasks and data, model load, cache and
fingerprint, backend seconds per request kind, writing); the rest of a task's time is lm-eval's task
building and scoring (an ``lmeval:`` task runs lm-eval's evaluator over llmgen's backend). lm-eval's
come from timers this script wraps around its functions in the subprocess (``--driver``): TaskManager
+ ``TaskManager.load`` (tasks and data), ``build_all_requests`` (prompts), ``HFLM.__init__`` (model
load), ``HFLM.generate_until`` / ``loglikelihood`` (requests by kind), the rest of ``evaluate``
(scoring), ``EvaluationTracker.save_results_*`` (writing). For both, "imports" is the time to import
the command-line module, and "other" the wall time of the subprocess not in any stage (interpreter
start and exit, argument parsing, seeding, lazily imported modules). Peak RSS is the subprocess's
own ``ru_maxrss``. Threads: 0 = torch's default, else ``OMP_NUM_THREADS`` / ``torch.set_num_threads``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STAGES = ("imports", "tasks_data", "model_load", "cache", "generate", "loglikelihood", "scoring", "writing",
          "other")
GEN_TASK, MC_TASK = "ovh_arith_gen", "ovh_arith_mc"


# --- the workload ----------------------------------------------------------------------------------
def arithmetic_rows(n: int, seed: int) -> list[dict]:
    """``n`` two-operand sums and differences, fixed by ``seed``."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(1, 99), rng.randint(1, 99)
        op = rng.choice("+-")
        rows.append({"question": f"What is {a} {op} {b}?", "answer": str(a + b if op == "+" else a - b)})
    for r in rows:
        r["choices"] = [r["answer"], str(int(r["answer"]) + 1)]
    return rows


def write_tasks(folder: Path, n: int) -> Path:
    """The two task YAMLs and their data (test: ``n`` rows, few-shot pool: 50 others); the include folder."""
    include = folder / "tasks"
    include.mkdir(parents=True)
    for split, rows in (("test", arithmetic_rows(n, 0)), ("train", arithmetic_rows(50, 1))):
        (include / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = (f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {include / 'test.jsonl'}\n"
              f"    train: {include / 'train.jsonl'}\ntest_split: test\nfewshot_split: train\nnum_fewshot: 3\n"
              "doc_to_text: \"Question: {{question}}\\nAnswer:\"\nmetadata:\n  version: 1.0\n")
    (include / f"{GEN_TASK}.yaml").write_text(
        f"task: {GEN_TASK}\n{common}output_type: generate_until\ndoc_to_target: \"{{{{answer}}}}\"\n"
        "generation_kwargs:\n  until: [\"\\n\", \"Question:\"]\n  max_gen_toks: 16\n  do_sample: false\n"
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n")
    (include / f"{MC_TASK}.yaml").write_text(
        f"task: {MC_TASK}\n{common}output_type: multiple_choice\ndoc_to_choice: \"{{{{choices}}}}\"\n"
        "doc_to_target: 0\nmetric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n")
    return include


# --- inside the subprocess -----------------------------------------------------------------------
def _timer(stages: dict[str, float], stage: str, fn):
    def wrapped(*a, **kw):
        t = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            stages[stage] = stages.get(stage, 0.0) + time.perf_counter() - t
    return wrapped


def drive_lm_eval(argv: list[str], stages: dict[str, float]) -> None:
    """lm-eval's own CLI with timers around its stage functions (nested stages are subtracted later)."""
    t = time.perf_counter()
    from lm_eval.__main__ import cli_evaluate

    stages["imports"] = time.perf_counter() - t
    from lm_eval import evaluator
    from lm_eval.api.task import Task
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    TaskManager.__init__ = _timer(stages, "task_manager", TaskManager.__init__)
    TaskManager.load = _timer(stages, "task_load", TaskManager.load)
    Task.build_all_requests = _timer(stages, "build_requests", Task.build_all_requests)
    HFLM.__init__ = _timer(stages, "model_load", HFLM.__init__)
    HFLM.generate_until = _timer(stages, "generate", HFLM.generate_until)
    HFLM.loglikelihood = _timer(stages, "loglikelihood", HFLM.loglikelihood)
    evaluator.evaluate = _timer(stages, "evaluate", evaluator.evaluate)
    EvaluationTracker.save_results_aggregated = _timer(stages, "writing", EvaluationTracker.save_results_aggregated)
    EvaluationTracker.save_results_samples = _timer(stages, "writing", EvaluationTracker.save_results_samples)
    sys.argv = ["lm_eval", *argv]
    cli_evaluate()


def drive_llmgen(argv: list[str], stages: dict[str, float]) -> None:
    t = time.perf_counter()
    from llmgen.cli.main import main

    stages["imports"] = time.perf_counter() - t
    try:
        main(argv)
    except SystemExit as e:
        if e.code:
            raise


def driver(tool: str, argv: list[str]) -> None:
    """The subprocess: run ``tool``'s CLI, then write its stage seconds and peak RSS to $OVERHEAD_OUT."""
    threads = int(os.environ.get("OVERHEAD_THREADS", "0"))
    if threads:
        import torch

        torch.set_num_threads(threads)
    stages: dict[str, float] = {}
    t = time.perf_counter()
    (drive_lm_eval if tool == "lm-eval" else drive_llmgen)(argv, stages)
    stages["main"] = time.perf_counter() - t
    stages["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(os.environ["OVERHEAD_OUT"]).write_text(json.dumps(stages))


# --- the parent ------------------------------------------------------------------------------------
def llmgen_stages(raw: dict, results: dict, wall: float) -> dict[str, float]:
    """Stage seconds of one llmgen run from its results.json timings (+ the driver's imports)."""
    t = results["timings"]
    tasks = sum(v for k, v in t.items() if k.startswith("lmeval:"))
    gen, ll = t.get("generate_requests_s", 0.0), t.get("loglikelihood_requests_s", 0.0)
    cache = t.get("cache_s", 0.0)
    out = {"imports": raw["imports"], "tasks_data": t.get("tasks_data_s", 0.0), "model_load": t["load_s"],
           "cache": cache, "generate": gen, "loglikelihood": ll, "scoring": max(tasks - gen - ll - cache, 0.0),
           "writing": t.get("write_s", 0.0)}
    out["other"] = wall - sum(out.values())
    return out


def lm_eval_stages(raw: dict, wall: float) -> dict[str, float]:
    gen, ll, build = raw.get("generate", 0.0), raw.get("loglikelihood", 0.0), raw.get("build_requests", 0.0)
    out = {"imports": raw["imports"], "tasks_data": raw.get("task_manager", 0.0) + raw.get("task_load", 0.0) + build,
           "model_load": raw.get("model_load", 0.0), "cache": 0.0, "generate": gen, "loglikelihood": ll,
           "scoring": raw.get("evaluate", 0.0) - gen - ll - build, "writing": raw.get("writing", 0.0)}
    out["other"] = wall - sum(out.values())
    return out


def llmgen_cache_dir(scratch: Path) -> Path:
    """A fresh llmgen cache folder (an empty request cache) that shares the converted models of the real one."""
    from llmgen.models import cache_dir

    fresh = scratch / f"llmgen-cache-{time.time_ns()}"
    fresh.mkdir()
    real = cache_dir()
    for entry in real.iterdir() if real.is_dir() else []:
        if not entry.name.startswith("requests.sqlite"):
            (fresh / entry.name).symlink_to(entry)
    return fresh


def run_one(tool: str, model: str, dtype: str, threads: int, limit: int | None, scratch: Path,
            include: Path, before: str | None = None) -> dict:
    out_dir = scratch / f"out-{tool}-{time.time_ns()}"
    stage_file = scratch / "stages.json"
    env = {**os.environ, "OVERHEAD_OUT": str(stage_file), "OVERHEAD_THREADS": str(threads),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    lim = ["--limit", str(limit)] if limit else []
    if tool == "llmgen-before":
        env["PYTHONPATH"] = os.pathsep.join([str(before), *filter(None, [env.get("PYTHONPATH")])])
    if tool.startswith("llmgen"):
        env["LLMGEN_CACHE"] = str(llmgen_cache_dir(scratch))
        argv = ["eval", "--tasks", f"lmeval:{GEN_TASK},lmeval:{MC_TASK}", "--include-path", str(include),
                "--model", model, "--model-args", f"dtype={dtype}", "--output-dir", str(out_dir), *lim]
    else:
        argv = ["--model", "hf", "--model_args", f"pretrained={model},dtype={dtype}", "--device", "cpu",
                "--tasks", f"{GEN_TASK},{MC_TASK}", "--include_path", str(include), "--log_samples",
                "--output_path", str(out_dir), *lim]
    load = os.getloadavg()[0]
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--driver", tool.split("-before")[0], "--", *argv], env=env, cwd=scratch,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{tool} failed:\n{proc.stderr[-3000:]}")
    raw = json.loads(stage_file.read_text())
    if tool.startswith("llmgen"):
        results = json.loads((out_dir / "results.json").read_text())
        stages = llmgen_stages(raw, results, wall)
        metrics = {t: results["results"][f"lmeval:{t}"] for t in (GEN_TASK, MC_TASK)}
    else:
        results = json.loads(next(out_dir.rglob("results_*.json")).read_text())
        stages = lm_eval_stages(raw, wall)
        metrics = {t: {k.split(",")[0]: v for k, v in results["results"][t].items()
                       if "," in k and "stderr" not in k} for t in (GEN_TASK, MC_TASK)}
    shutil.rmtree(out_dir, ignore_errors=True)
    return {"tool": tool, "dtype": dtype, "threads": threads, "limit": limit, "wall_s": wall,
            "stages": stages, "peak_rss_mb": raw["peak_rss_mb"], "load_avg_1m": load, "metrics": metrics}


def table(runs: list[dict]) -> str:
    """Markdown: the mean stage seconds per (dtype, threads, limit, tool), then the wall-time ratio."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["dtype"], r["threads"], r["limit"], r["tool"]), []).append(r)
    head = ("| dtype | threads | limit | tool | runs | wall s (each) | " + " | ".join(STAGES)
            + " | peak RSS MB | load avg |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for (dtype, th, lim, tool), rs in sorted(groups.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        mean = {s: sum(r["stages"][s] for r in rs) / len(rs) for s in STAGES}
        walls = ", ".join(f"{r['wall_s']:.1f}" for r in rs)
        lines.append(f"| {dtype} | {th or 'default'} | {lim or 'all'} | {tool} | {len(rs)} | {walls} | "
                     + " | ".join(f"{mean[s]:.2f}" for s in STAGES)
                     + f" | {max(r['peak_rss_mb'] for r in rs):.0f} | "
                     + ", ".join(f"{r['load_avg_1m']:.1f}" for r in rs) + " |")
    lines.append("")
    for (dtype, th, lim, tool), rs in sorted(groups.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        if not tool.startswith("llmgen") or (dtype, th, lim, "lm-eval") not in groups:
            continue
        ref = groups[(dtype, th, lim, "lm-eval")]
        ratio = (sum(r["wall_s"] for r in ref) / len(ref)) / (sum(r["wall_s"] for r in rs) / len(rs))
        lines.append(f"- {dtype}, threads {th or 'default'}, limit {lim or 'all'}: lm-eval / {tool} wall "
                     f"= **{ratio:.2f}x** (mean of {len(rs)} + {len(ref)} runs)")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--driver", choices=["llmgen", "lm-eval"], help=argparse.SUPPRESS)
    ap.add_argument("--model", default="default")
    ap.add_argument("--n", type=int, default=200, help="documents per task")
    ap.add_argument("--limit", type=int, default=None, help="--limit passed to both tools")
    ap.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"])
    ap.add_argument("--threads", nargs="+", type=int, default=[0, 1], help="0 = torch's default")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--tools", nargs="+", default=["llmgen", "lm-eval"])
    ap.add_argument("--before", default=None, help="another checkout's root: its llmgen runs too")
    ap.add_argument("--warmup", action="store_true", help="one untimed llmgen --limit 1 run first")
    ap.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--out", default="overhead.json", help="JSON of every run; the table goes to <out>.md")
    args, rest = ap.parse_known_args()
    if args.driver:
        driver(args.driver, rest[1:] if rest[:1] == ["--"] else rest)
        return
    from llmgen.models import resolve_model

    model = resolve_model(args.model)
    runs = []
    tools = [*args.tools, *(["llmgen-before"] if args.before else [])]
    with tempfile.TemporaryDirectory(prefix="overhead-", dir=args.workdir) as tmp:
        scratch = Path(tmp)
        include = write_tasks(scratch, args.n)
        if args.warmup:
            run_one("llmgen", model, args.dtypes[0], 0, 1, scratch, include)
        for dtype in args.dtypes:
            for threads in args.threads:
                for _ in range(args.repeats):
                    for tool in tools:  # interleaved: llmgen, lm-eval, llmgen, lm-eval
                        r = run_one(tool, model, dtype, threads, args.limit, scratch, include, args.before)
                        print(f"{tool:8} {dtype:9} threads={threads or 'default'} limit={args.limit} "
                              f"wall {r['wall_s']:.1f}s rss {r['peak_rss_mb']:.0f}MB load {r['load_avg_1m']:.1f} "
                              f"{json.dumps({k: round(v, 2) for k, v in r['stages'].items()})} {r['metrics']}",
                              file=sys.stderr, flush=True)
                        runs.append(r)
    md = table(runs)
    Path(args.out).write_text(json.dumps({"argv": sys.argv[1:], "runs": runs}, indent=1))
    Path(args.out).with_suffix(".md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()

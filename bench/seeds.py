"""Shared pieces of the reproduction drivers (bench/<paper>.py): run a committed config through the
CLI once per seed, and summarise figures across seeds with 95% Student-t intervals.

Three seeds give only three numbers per figure, so the interval is the t interval of their mean
(``llmgen.evals.stats.t_interval``, multiplier 4.30 at n = 3), not a bootstrap; it is wide by
construction, and a claim counts as shown only when the interval of the per-seed *change* excludes
zero in the paper's direction.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEEDS = (0, 1, 2)


def llmgen_command(command: str, config: str | Path, overrides: Sequence[str]) -> list[str]:
    """``llmgen <command> --config FILE key=value ...`` with the console script of this interpreter."""
    exe = Path(sys.executable).with_name("llmgen")
    return [str(exe), *command.split(), "--config", str(config), *overrides]


def seed_parser(description: str, config: Path, runs: str, doc: Path) -> argparse.ArgumentParser:
    """The arguments every seed driver takes: the committed config, the seeds, extra overrides, the run
    folder, ``--reuse`` (keep finished runs, so an interrupted driver resumes) and the page it writes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config", default=str(config))
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    p.add_argument("--override", nargs="*", default=[], help="extra key=value overrides for every run")
    p.add_argument("--runs", default=str(ROOT / "runs" / "repro" / runs))
    p.add_argument("--reuse", action="store_true", help="keep runs whose outputs exist")
    p.add_argument("--doc", default=str(doc))
    return p


def run_logged(argv: Sequence[str], log: Path, threads: int = 1) -> float:
    """Run ``argv`` from the repository root with ``threads`` OpenMP threads, stdout+stderr to ``log``.

    One thread because the CPU is shared: torch's spinning OpenMP threads make a crowded 2-core
    machine several times slower. Returns the wall seconds; a failed run stops the driver with the
    log's last lines, since a figure from fewer seeds than asked would be silently weaker.
    """
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "TOKENIZERS_PARALLELISM": "false"}
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with open(log, "w", encoding="utf-8") as fh:
        rc = subprocess.call(list(argv), cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
    if rc:
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-5:]
        raise SystemExit(f"error: {' '.join(argv)} exited {rc}; last lines of {log}:\n" + "\n".join(tail))
    return time.time() - start


def interval(values: Sequence[float]) -> tuple[float, float, float]:
    """``(mean, low, high)`` across seeds: the 95% t interval (a single value gives a point)."""
    from llmgen.evals.stats import t_interval

    vals = [float(v) for v in values]
    if len(vals) == 1:
        return vals[0], vals[0], vals[0]
    return t_interval(vals)


def fmt(values: Sequence[float], digits: int = 3) -> str:
    """``mean [low, high]`` of per-seed values, for a Markdown cell."""
    mean, low, high = interval(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def direction(values: Sequence[float], sign: int) -> bool:
    """True when the interval of per-seed changes lies entirely on the ``sign`` side of zero."""
    _, low, high = interval(values)
    return low > 0 if sign > 0 else high < 0


def verdict(checks: Sequence[bool]) -> str:
    """``shown`` (every check), ``partly`` (some) or ``not shown`` (none)."""
    return "shown" if all(checks) else "partly" if any(checks) else "not shown"


def band_plot(path: Path, x: Sequence[float], panels: Sequence[tuple[str, dict[str, list[list[float]]]]],
              xlabel: str, title: str, logx: bool = False) -> Path:
    """One panel per figure: per series the mean across seeds with its 95% t band.

    ``panels`` = ``[(ylabel, {series label: [values at each x for seed 0], [... seed 1], ...})]``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (ylabel, series) in zip(axes[0], panels, strict=True):
        for label, per_seed in series.items():
            stats = np.array([interval(col) for col in zip(*per_seed, strict=True)])
            ax.plot(x, stats[:, 0], "o-", ms=3, label=label)
            ax.fill_between(x, stats[:, 1], stats[:, 2], alpha=0.25)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if logx:
            ax.set_xscale("log")
        if len(series) > 1:
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

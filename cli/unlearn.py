"""``llmgen unlearn``: NPO-style unlearning evaluated with TOFU (Zhang et al. 2024; Maini et al. 2024).

The TOFU pipeline has three model-producing stages, picked with ``--stage``:

- ``finetune``: fine-tune ``--model`` on TOFU ``full`` → ``<output>/model`` (the model to unlearn);
- ``retain-logs``: fine-tune ``--model`` on the retain split only, evaluate it on the forget split and
  write ``--retain-logs`` (add ``--no-train`` when ``--model`` already is a retain-only model);
- ``unlearn`` (default): unlearn the forget split from ``--model`` with each ``--method``, evaluating
  forget quality (needs ``--retain-logs``) and model utility along the way.

``--data synthetic`` writes a deterministic synthetic TOFU-format set (the hub is often unreachable);
a folder of TOFU files or ``locuslab/TOFU`` work too.
"""

from __future__ import annotations

from pathlib import Path

import typer

from llmgen.errors import LlmgenError
from llmgen.tofu import QA_PROMPT_TEMPLATE

STAGES = ("unlearn", "finetune", "retain-logs")


def unlearn(
    method: str = typer.Option("npo", "--method", help="Method(s), comma-separated: ga, gd, kl, npo, npo_rt, npo_kl, "
                                                       "idkdpo, idkdpo_rt, simnpo, simnpo_rt."),
    model: str = typer.Option("default", help="Start model: built-in name, folder, .gguf file or hub id."),
    data: str = typer.Option("synthetic", help="TOFU data: 'synthetic', a folder of TOFU files, or a hub id."),
    forget: str = typer.Option("forget10", "--forget", help="Forget split: forget01, forget05, forget10, ..."),
    retain_logs: Path | None = typer.Option(None, help="Retain-model logs JSON (forget-set truth ratios)."),
    stage: str = typer.Option("unlearn", help="unlearn, finetune or retain-logs (see the command help)."),
    train_retain: bool = typer.Option(True, "--train/--no-train", help="retain-logs: fine-tune on retain first."),
    beta: float | None = typer.Option(None, help="β of NPO/IdkDPO (default 0.1) or SimNPO (default 2.5)."),
    alpha: float | None = typer.Option(None, help="Weight of the retain term (*_rt, *_kl, gd, kl; default 1)."),
    delta: float | None = typer.Option(None, help="SimNPO margin δ (default 0)."),
    steps: int | None = typer.Option(None, help="Optimizer steps (overrides --epochs)."),
    epochs: float = typer.Option(5.0, help="Epochs over the forget (or fine-tuning) set."),
    lr: float = typer.Option(1e-5, help="Learning rate (AdamW, constant)."),
    batch_size: int = typer.Option(8, help="Batch size per stream."),
    grad_accum: int = typer.Option(1, help="Gradient accumulation steps."),
    lora_r: int = typer.Option(0, help="LoRA rank (0: full fine-tuning, as in the paper)."),
    lora_alpha: int = typer.Option(32, help="LoRA alpha."),
    eval_every: int = typer.Option(0, help="Evaluate every N steps (0: start and end only)."),
    eval_limit: int | None = typer.Option(None, help="Use only the first N rows of each evaluation set."),
    backend: str = typer.Option("hf", help="Scoring backend: hf (in memory) or vllm (GPU)."),
    max_new_tokens: int = typer.Option(48, help="Greedy generation length for ROUGE-L."),
    dtype: str = typer.Option("float32", help="Model dtype."),
    seed: int = typer.Option(0, help="Seed for data order and the synthetic set."),
    prompt_template: str = typer.Option(QA_PROMPT_TEMPLATE,
                                        help="Prompt with {question}, or 'chat' for the model's chat template."),
    synthetic_answers: str = typer.Option("long", help="Synthetic set's answers: long (TOFU-length) or short."),
    output: Path = typer.Option(Path("runs/unlearn"), "--output-dir", "-o", help="Run folder."),
) -> None:
    """Unlearn a TOFU forget split (or prepare the fine-tuned / retain-only models)."""
    if stage not in STAGES:
        raise LlmgenError(f"unknown stage {stage!r} (use {', '.join(STAGES)})")
    from rich.console import Console

    from llmgen.recipes.npo_unlearning import UnlearnConfig, data_source, finetune, make_retain_logs, run
    from llmgen.tofu import retain_config

    console = Console()
    config = UnlearnConfig(
        model=model, data=data, forget_split=forget, methods=[m.strip() for m in method.split(",") if m.strip()],
        retain_logs=str(retain_logs) if retain_logs else None, beta=beta, alpha=alpha, delta=delta, steps=steps,
        epochs=epochs, lr=lr, batch_size=batch_size, grad_accum=grad_accum, lora_r=lora_r, lora_alpha=lora_alpha,
        eval_every=eval_every, eval_limit=eval_limit, backend=backend, max_new_tokens=max_new_tokens, dtype=dtype,
        seed=seed, synthetic_seed=seed, synthetic_answer_style=synthetic_answers,
        prompt_template=prompt_template, output_dir=str(output))
    config.validate()
    ft_kw = dict(steps=steps, epochs=epochs, lr=lr, batch_size=batch_size, lora_r=lora_r, lora_alpha=lora_alpha,
                 seed=seed, dtype=dtype, prompt_template=prompt_template)
    if stage == "finetune":
        folder = finetune(model, data_source(config), "full", str(output), **ft_kw)
        console.print(f"fine-tuned model: {folder}")
        return
    if stage == "retain-logs":
        if retain_logs is None:
            raise LlmgenError("--stage retain-logs needs --retain-logs PATH to write to")
        source = data_source(config)
        retain_model = finetune(model, source, retain_config(forget), str(output), **ft_kw) if train_retain else model
        make_retain_logs(retain_model, source, forget, str(retain_logs), eval_limit=eval_limit, backend=backend,
                         dtype=dtype, prompt_template=prompt_template)
        console.print(f"retain-model logs: {retain_logs} (model {retain_model})")
        return
    results = run(config)
    from llmgen.training import is_main_process

    if not is_main_process():
        return
    from rich.table import Table

    table = Table(title=f"TOFU unlearning ({forget})")
    for col in ("method", "step", "forget quality", "model utility", "forget prob", "forget ROUGE-L"):
        table.add_column(col, justify="right")
    rows = [("start", {"step": 0, **results["start"]})] + [(m, r["final"]) for m, r in results["methods"].items()]
    for name, r in rows:
        table.add_row(name, str(r["step"]), f"{r['forget_quality']:.3g}", f"{r['model_utility']:.3f}",
                      f"{r['forget.prob']:.3f}", f"{r['forget.rougeL']:.3f}")
    console.print(table)
    console.print(f"wrote {output}/results.json, samples.jsonl, curve.png, table.md")


def register(app: typer.Typer) -> None:
    app.command("unlearn")(unlearn)

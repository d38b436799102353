"""``llmgen npo-unlearning``: NPO-style unlearning evaluated with TOFU (Zhang et al. 2024; Maini et al. 2024).

The TOFU pipeline has three model-producing stages, picked with ``--stage``:

- ``finetune``: fine-tune ``--model`` on TOFU ``full`` → ``<output>/model`` (the model to unlearn);
- ``retain-logs``: fine-tune ``--model`` on the retain split only, evaluate it on the forget split and
  write ``--retain-logs`` (add ``--no-train`` when ``--model`` already is a retain-only model);
- ``unlearn`` (default): unlearn the forget split from ``--model`` with each ``--method``, evaluating
  forget quality (needs ``--retain-logs``) and model utility along the way.

``--data synthetic`` reads the deterministic synthetic TOFU-format set in llmgen's cache (the same
one ``llmgen eval --tasks tofu_*`` reads; the hub is often unreachable); a folder of TOFU files or
``locuslab/TOFU`` work too. Schedule options left unset take the reference defaults of the stage:
unlearning as open-unlearning (10 epochs, batch 8 × accumulation 4, lr 1e-5, one warm-up epoch then
linear decay), fine-tuning as TOFU (5 epochs, batch 16, lr 1e-5, one warm-up epoch).
"""

from __future__ import annotations

from pathlib import Path

import typer

from llmgen.errors import LlmgenError
from llmgen.tasks.tofu import QA_PROMPT_TEMPLATE

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
    beta: float | None = typer.Option(None, help="β of NPO/IdkDPO (default 0.1) or SimNPO (default 4.5)."),
    alpha: float | None = typer.Option(None, help="Weight of the retain term (*_rt, *_kl, gd, kl; default 1)."),
    gamma: float | None = typer.Option(None, help="Weight of the forget term (default 1; SimNPO 0.125)."),
    delta: float | None = typer.Option(None, help="SimNPO margin δ (default 0)."),
    ga_reduction: str | None = typer.Option(None, help="GA forget term of ga/gd/kl: mean (per token, the "
                                                       "reference) or sum (per sequence)."),
    kl_reduction: str | None = typer.Option(None, help="KL retain term of kl/npo_kl: batchmean (all positions, "
                                                       "the reference) or answer (answer tokens, per sequence)."),
    steps: int | None = typer.Option(None, help="Optimizer steps (overrides --epochs)."),
    epochs: float | None = typer.Option(None, help="Epochs over the forget (or fine-tuning) set "
                                                   "(default 10 unlearning, 5 fine-tuning)."),
    lr: float = typer.Option(1e-5, help="Peak learning rate (AdamW; warm-up, then linear decay)."),
    batch_size: int | None = typer.Option(None, help="Batch size per stream (default 8 unlearning, 16 fine-tuning)."),
    grad_accum: int | None = typer.Option(None, help="Gradient accumulation steps (default 4 unlearning, 1 fine-tuning)."),
    warmup_epochs: float = typer.Option(1.0, help="Epochs of linear warm-up before the linear decay."),
    weight_decay: float = typer.Option(0.01, help="AdamW weight decay."),
    max_grad_norm: float = typer.Option(1.0, help="Gradient clipping norm (0: none)."),
    lora_r: int = typer.Option(0, help="LoRA rank (0: full fine-tuning, as in the paper)."),
    lora_alpha: int = typer.Option(32, help="LoRA alpha."),
    eval_every: int = typer.Option(0, help="Evaluate every N steps (0: start and end only)."),
    ds_size: int | None = typer.Option(None, help="Evaluate the first N rows of each set, as TOFU does (300)."),
    eval_limit: int | None = typer.Option(None, help="Use only the first N rows of each evaluation set."),
    backend: str = typer.Option("hf", help="Scoring backend: hf (in memory) or vllm (GPU)."),
    max_new_tokens: int = typer.Option(200, help="Greedy generation budget for ROUGE-L (stops at EOS)."),
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
    from llmgen.tasks.tofu import retain_config

    console = Console()
    schedule = {k: v for k, v in (("epochs", epochs), ("batch_size", batch_size), ("grad_accum", grad_accum))
                if v is not None}  # unset: each stage's reference default
    config = UnlearnConfig(
        model=model, data=data, forget_split=forget, methods=[m.strip() for m in method.split(",") if m.strip()],
        retain_logs=str(retain_logs) if retain_logs else None, beta=beta, alpha=alpha, gamma=gamma, delta=delta,
        ga_reduction=ga_reduction, kl_reduction=kl_reduction, steps=steps, lr=lr, warmup_epochs=warmup_epochs,
        weight_decay=weight_decay, max_grad_norm=max_grad_norm or None, lora_r=lora_r, lora_alpha=lora_alpha,
        eval_every=eval_every, ds_size=ds_size, eval_limit=eval_limit, backend=backend,
        max_new_tokens=max_new_tokens, dtype=dtype, seed=seed, synthetic_seed=seed,
        synthetic_answer_style=synthetic_answers, prompt_template=prompt_template, output_dir=str(output), **schedule)
    config.validate()
    from llmgen.io import check_output_dir

    check_output_dir(output, overwrite=True)  # stages share the folder; a file in the way fails now
    ft_kw = dict(steps=steps, lr=lr, lora_r=lora_r, lora_alpha=lora_alpha, seed=seed, dtype=dtype,
                 prompt_template=prompt_template, warmup_epochs=warmup_epochs, weight_decay=weight_decay, **schedule)
    if stage == "finetune":
        folder = finetune(model, data_source(config), "full", str(output), **ft_kw)
        console.print(f"fine-tuned model: {folder}")
        return
    if stage == "retain-logs":
        if retain_logs is None:
            raise LlmgenError("--stage retain-logs needs --retain-logs PATH to write to")
        source = data_source(config)
        retain_model = finetune(model, source, retain_config(forget), str(output), **ft_kw) if train_retain else model
        make_retain_logs(retain_model, source, forget, str(retain_logs), eval_limit=config.eval_size(),
                         backend=backend, dtype=dtype, prompt_template=prompt_template, max_new_tokens=max_new_tokens)
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
    app.command("npo-unlearning")(unlearn)

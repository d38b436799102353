"""``llmgen train``: fine-tune a model on a JSONL/CSV/``datasets`` file with any registered loss.

Runs unchanged under ``accelerate launch`` / ``torchrun`` (see docs/training.md).
"""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_cmd(
        model: str = typer.Option(..., "--model", help="model name, folder, .gguf or hub id ('default' = SmolLM2-135M)"),
        data: str = typer.Option(..., "--data", help="training data: .jsonl, .csv, a datasets folder or hub id"),
        loss: str = typer.Option("ce", "--loss", help="a registered loss (ce, or one a recipe adds)"),
        loss_arg: list[str] = typer.Option([], "--loss-arg", help="loss argument NAME=VALUE (repeatable)"),
        output_dir: str = typer.Option("runs/train", "--output-dir", "-o"),
        epochs: float = typer.Option(1.0, "--epochs"),
        max_steps: int = typer.Option(None, "--max-steps", help="optimizer steps (overrides --epochs)"),
        lr: float = typer.Option(5e-5, "--lr"),
        batch_size: int = typer.Option(8, "--batch-size"),
        grad_accum: int = typer.Option(1, "--grad-accum"),
        warmup_steps: int = typer.Option(0, "--warmup-steps"),
        schedule: str = typer.Option("linear", "--schedule", help="linear, constant or cosine"),
        weight_decay: float = typer.Option(0.0, "--weight-decay"),
        mixed_precision: str = typer.Option("no", "--mixed-precision", help="no, bf16 or fp16"),
        lora_r: int = typer.Option(0, "--lora-r", help="LoRA rank; 0 = full fine-tuning"),
        lora_alpha: int = typer.Option(16, "--lora-alpha"),
        lora_targets: str = typer.Option("all-linear", "--lora-targets", help="comma-separated module names"),
        gradient_checkpointing: bool = typer.Option(False, "--gradient-checkpointing"),
        data_format: str = typer.Option("auto", "--data-format", help="auto, prompt_answer or text"),
        prompt_field: str = typer.Option("prompt", "--prompt-field"),
        answer_field: str = typer.Option("answer", "--answer-field"),
        text_field: str = typer.Option("text", "--text-field"),
        max_length: int = typer.Option(512, "--max-length"),
        save_every: int = typer.Option(0, "--save-every", help="checkpoint every N steps (0 = never)"),
        keep_checkpoints: int = typer.Option(2, "--keep-checkpoints"),
        seed: int = typer.Option(0, "--seed"),
        resume: bool = typer.Option(False, "--resume", help="continue from the latest checkpoint in --output-dir"),
        progress: bool = typer.Option(None, "--progress/--no-progress", help="default: on when interactive"),
    ) -> None:
        """Fine-tune a model (full or LoRA) through the shared training loop."""
        from llmgen.training import TrainConfig, is_main_process, train

        cfg = TrainConfig(
            model=model, data=data, loss=loss, loss_args=_parse_loss_args(loss_arg), output_dir=output_dir,
            epochs=epochs, max_steps=max_steps, lr=lr, batch_size=batch_size, grad_accum=grad_accum,
            warmup_steps=warmup_steps, schedule=schedule, weight_decay=weight_decay,
            mixed_precision=mixed_precision, lora_r=lora_r, lora_alpha=lora_alpha, lora_targets=lora_targets,
            gradient_checkpointing=gradient_checkpointing, data_format=data_format, prompt_field=prompt_field,
            answer_field=answer_field, text_field=text_field, max_length=max_length, save_every=save_every,
            keep_checkpoints=keep_checkpoints, seed=seed, resume=resume, progress=progress,
        )
        cfg.validate()  # before loading a model, so bad flags fail fast
        result = train(cfg)
        if result.num_processes == 1 or is_main_process():
            typer.echo(f"trained {result.steps} steps, final loss {result.final_loss:.4f}, "
                       f"{result.tokens_per_s:.0f} tokens/s -> {result.final_path or result.output_dir}")


def _parse_loss_args(items: list[str]) -> dict:
    """``["beta=0.1", "retain=kl"]`` → ``{"beta": 0.1, "retain": "kl"}`` (numbers parsed as JSON)."""
    import json

    from llmgen.errors import LlmgenError

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise LlmgenError(f"--loss-arg must look like NAME=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out

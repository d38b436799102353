"""``llmgen train``: fine-tune a model on a JSONL/CSV/``datasets`` file with any registered loss.

Runs unchanged under ``accelerate launch`` / ``torchrun`` (see docs/training.md). Every
``TrainConfig`` field a command line can set has an option here (``tests/cli/test_cli.py`` checks it).
"""

from __future__ import annotations

import typer

# TrainConfig fields with no option, and why (checked by tests/cli/test_cli.py).
NOT_OPTIONS = {
    "eval_every": "an eval hook is a Python function (train(eval_fn=...)); the command has none",
}


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_cmd(
        model: str = typer.Option(..., "--model", help="model name, folder, .gguf or hub id ('default' = SmolLM2-135M)"),
        data: str = typer.Option(..., "--data", help="training data: .jsonl, .csv, a datasets folder or hub id"),
        split: str = typer.Option("train", "--split", help="split of a datasets folder or hub id"),
        loss: str = typer.Option("ce", "--loss", help="a registered loss (ce, or one a recipe adds)"),
        loss_arg: list[str] = typer.Option([], "--loss-arg", help="loss argument NAME=VALUE (repeatable)"),
        output_dir: str = typer.Option(None, "--output-dir", "-o",
                                       help="run folder (default: runs/train-<timestamp>)"),
        overwrite: bool = typer.Option(False, "--overwrite", help="replace the run in a non-empty --output-dir"),
        epochs: float = typer.Option(1.0, "--epochs", help="passes over the data (fractions allowed)"),
        max_steps: int = typer.Option(None, "--max-steps", help="optimizer steps (overrides --epochs)"),
        lr: float = typer.Option(5e-5, "--lr", help="peak learning rate (AdamW)"),
        batch_size: int = typer.Option(8, "--batch-size", help="examples per micro-batch on each process"),
        grad_accum: int = typer.Option(1, "--grad-accum", help="micro-batches per optimizer step"),
        warmup_steps: int = typer.Option(0, "--warmup-steps", help="linear warm-up steps (overrides --warmup-ratio)"),
        warmup_ratio: float = typer.Option(0.0, "--warmup-ratio", help="warm-up as a fraction of all steps"),
        schedule: str = typer.Option("linear", "--schedule", help="linear, constant or cosine"),
        weight_decay: float = typer.Option(0.0, "--weight-decay", help="AdamW weight decay (not on biases/norms)"),
        adam_betas: str = typer.Option("0.9,0.999", "--adam-betas", help="AdamW beta1,beta2"),
        adam_eps: float = typer.Option(1e-8, "--adam-eps", help="AdamW epsilon"),
        max_grad_norm: float = typer.Option(1.0, "--max-grad-norm", help="clip gradients to this norm (0 = no clipping)"),
        mixed_precision: str = typer.Option("no", "--mixed-precision", help="no, bf16 or fp16"),
        model_dtype: str = typer.Option("float32", "--model-dtype", help="dtype the weights are loaded in"),
        cpu: bool = typer.Option(False, "--cpu", help="train on the CPU even when a GPU is present"),
        lora_r: int = typer.Option(0, "--lora-r", help="LoRA rank; 0 = full fine-tuning"),
        lora_alpha: int = typer.Option(16, "--lora-alpha", help="LoRA scaling alpha (update scaled by alpha/r)"),
        lora_dropout: float = typer.Option(0.0, "--lora-dropout", help="dropout on the LoRA input"),
        lora_targets: str = typer.Option("all-linear", "--lora-targets", help="comma-separated module names"),
        gradient_checkpointing: bool = typer.Option(False, "--gradient-checkpointing",
                                                    help="recompute activations in backward (less memory, slower)"),
        ref_dtype: str = typer.Option(None, "--ref-dtype", help="dtype of the frozen reference model (losses that use one)"),
        ref_device: str = typer.Option(None, "--ref-device", help="device of the frozen reference model"),
        data_format: str = typer.Option("auto", "--data-format", help="auto, prompt_answer or text"),
        prompt_field: str = typer.Option("prompt", "--prompt-field", help="field holding the prompt (prompt_answer)"),
        answer_field: str = typer.Option("answer", "--answer-field", help="field holding the answer (loss on it only)"),
        text_field: str = typer.Option("text", "--text-field", help="field holding the text (text format)"),
        max_length: int = typer.Option(512, "--max-length", help="tokens per example; longer ones are cut"),
        save_every: int = typer.Option(0, "--save-every", help="checkpoint every N steps (0 = never)"),
        keep_checkpoints: int = typer.Option(2, "--keep-checkpoints", help="newest checkpoints kept"),
        save_final: bool = typer.Option(True, "--save-final/--no-save-final", help="write the trained model to final/"),
        log_every: int = typer.Option(1, "--log-every", help="write a metrics.jsonl row every N steps"),
        report_to: list[str] = typer.Option([], "--report-to", help="also log to tensorboard or wandb (repeatable)"),
        seed: int = typer.Option(0, "--seed", help="seed of initialisation, data order and dropout"),
        resume: bool = typer.Option(False, "--resume", help="continue from the latest checkpoint in --output-dir"),
        progress: bool = typer.Option(None, "--progress/--no-progress", help="default: on when interactive"),
    ) -> None:
        """Fine-tune a model (full or LoRA) through the shared training loop."""
        import os
        import sys

        from llmgen.errors import LlmgenError
        from llmgen.io import check_output_dir, default_run_dir
        from llmgen.training import TrainConfig, is_main_process, train
        from llmgen.training.loop import RUN_FILES, check_resume

        # Under accelerate/torchrun every process runs this command: they must agree on one folder,
        # and only the first may refuse it (the others may find it already started).
        several = int(os.environ.get("WORLD_SIZE", "1")) > 1
        first = os.environ.get("RANK", "0") == "0"
        if output_dir is None:
            if resume or several:
                raise LlmgenError("--resume or a launch on several processes needs --output-dir")
            output_dir = str(default_run_dir("train"))
            print(f"run folder: {output_dir}", file=sys.stderr)
        cfg = TrainConfig(
            model=model, data=data, split=split, loss=loss, loss_args=_parse_loss_args(loss_arg),
            output_dir=output_dir, epochs=epochs, max_steps=max_steps, lr=lr, batch_size=batch_size,
            grad_accum=grad_accum, warmup_steps=warmup_steps, warmup_ratio=warmup_ratio, schedule=schedule,
            weight_decay=weight_decay, adam_betas=_parse_betas(adam_betas), adam_eps=adam_eps,
            max_grad_norm=max_grad_norm or None, mixed_precision=mixed_precision, model_dtype=model_dtype, cpu=cpu,
            lora_r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, lora_targets=lora_targets,
            gradient_checkpointing=gradient_checkpointing, ref_dtype=ref_dtype, ref_device=ref_device,
            data_format=data_format, prompt_field=prompt_field, answer_field=answer_field, text_field=text_field,
            max_length=max_length, save_every=save_every, keep_checkpoints=keep_checkpoints, save_final=save_final,
            log_every=log_every, report_to=list(report_to), seed=seed, resume=resume, progress=progress,
        )
        # All before loading a model, so bad flags fail fast and nothing is written.
        cfg.validate()
        check_output_dir(output_dir, overwrite=overwrite or resume or not first, run_files=RUN_FILES)
        if overwrite:
            cfg.resume = False
        check_resume(cfg)
        result = train(cfg)
        if result.num_processes == 1 or is_main_process():
            typer.echo(f"trained {result.steps} steps, final loss {result.final_loss:.4f}, "
                       f"{result.tokens_per_s:.0f} tokens/s -> {result.final_path or result.output_dir}")


def _parse_betas(text: str) -> tuple[float, float]:
    from llmgen.errors import LlmgenError

    try:
        b1, b2 = (float(x) for x in text.split(","))
    except ValueError:
        raise LlmgenError(f"--adam-betas must be two numbers like 0.9,0.999, got {text!r}") from None
    return b1, b2


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

"""``TrainConfig``: every knob of a training run in one JSON-serialisable dataclass.

It is saved next to every checkpoint, so a resumed run can check that it continues the same run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from llmgen.errors import LlmgenError

SCHEDULES = {"linear": "linear", "constant": "constant_with_warmup", "cosine": "cosine"}
PRECISIONS = ("no", "fp32", "bf16", "fp16")


@dataclass
class TrainConfig:
    """A training run. ``model``/``data`` are only read when ``train()`` is not handed objects.

    ``data`` is a path (JSONL, CSV, ``datasets`` folder) or hub id, or ``{"forget": ..., "retain": ...}``
    for paired streams (the first stream defines an epoch; the others cycle). ``data_format`` is
    ``"prompt_answer"`` (loss on answers only), ``"text"`` (loss on everything) or ``"auto"``
    (prompt_answer when the prompt/answer fields exist). ``lora_r = 0`` means full fine-tuning.
    ``max_steps`` (optimizer steps) overrides ``epochs`` when set.
    """

    model: str | None = None
    data: str | dict[str, str] | None = None
    data_format: str = "auto"
    prompt_field: str = "prompt"
    answer_field: str = "answer"
    text_field: str = "text"
    split: str = "train"
    max_length: int = 512

    loss: str = "ce"
    loss_args: dict[str, Any] = field(default_factory=dict)

    lr: float = 5e-5
    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int = 8
    grad_accum: int = 1
    warmup_steps: int = 0
    warmup_ratio: float = 0.0
    schedule: str = "linear"
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    max_grad_norm: float | None = 1.0
    mixed_precision: str = "no"
    model_dtype: str = "float32"
    cpu: bool = False

    lora_r: int = 0
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_targets: list[str] | str = "all-linear"
    gradient_checkpointing: bool = False

    ref_dtype: str | None = None
    ref_device: str | None = None

    save_every: int = 0
    keep_checkpoints: int = 2
    eval_every: int = 0
    log_every: int = 1
    seed: int = 0
    output_dir: str = "runs/train"
    resume: bool = False
    save_final: bool = True
    progress: bool | None = None
    report_to: list[str] = field(default_factory=list)

    def validate(self) -> None:
        """Check values before anything is loaded or written."""
        if self.schedule not in SCHEDULES:
            raise LlmgenError(f"unknown schedule {self.schedule!r} (use {', '.join(SCHEDULES)})")
        if self.mixed_precision not in PRECISIONS:
            raise LlmgenError(f"unknown mixed_precision {self.mixed_precision!r} (use {', '.join(PRECISIONS)})")
        if self.data_format not in ("auto", "prompt_answer", "text"):
            raise LlmgenError(f"unknown data_format {self.data_format!r} (use auto, prompt_answer or text)")
        for name in ("batch_size", "grad_accum", "max_length", "log_every"):
            if getattr(self, name) < 1:
                raise LlmgenError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise LlmgenError(f"max_steps must be at least 1, got {self.max_steps}")
        if self.max_steps is None and not self.epochs > 0:
            raise LlmgenError(f"epochs must be positive, got {self.epochs}")
        if self.lr <= 0:
            raise LlmgenError(f"lr must be positive, got {self.lr}")
        if self.lora_r < 0:
            raise LlmgenError(f"lora_r must be >= 0, got {self.lora_r}")
        if min(self.save_every, self.eval_every, self.warmup_steps) < 0 or self.keep_checkpoints < 1:
            raise LlmgenError("save_every, eval_every and warmup_steps must be >= 0; keep_checkpoints >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

"""Checkpoints under ``output_dir/checkpoints/step-N``: written whole or not at all.

``accelerator.save_state`` writes model, optimizer, scheduler and per-process RNG states (it
knows how to gather FSDP/DeepSpeed shards). It writes into ``.tmp-step-N``; ``trainer_state.json``
(step, data position, tokens, elapsed time) goes in last and the folder is renamed into place, so a
run killed mid-save leaves only a ``.tmp`` folder that resume ignores. With LoRA only the trainable
(adapter) tensors are stored, not a second copy of the base model.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

from llmgen.io import atomic_write_json, read_json

STATE_FILE = "trainer_state.json"
_STEP = re.compile(r"^step-(\d+)$")


def checkpoint_root(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir()
             if (m := _STEP.match(p.name)) and (p / STATE_FILE).is_file()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def install_lora_hooks(accelerator: Any) -> None:
    """Make ``save_state`` keep only trainable tensors of peft models (the adapters)."""
    from llmgen.training.modeling import is_peft

    def keep_trainable(models, weights, _output_dir):
        for i, m in enumerate(models):
            if i < len(weights) and is_peft(accelerator.unwrap_model(m)):
                names = {n for n, p in m.named_parameters() if p.requires_grad}
                weights[i] = {k: v for k, v in weights[i].items() if k in names}

    accelerator.register_save_state_pre_hook(keep_trainable)


def save_checkpoint(accelerator: Any, output_dir: str | os.PathLike, step: int, state: dict,
                    keep: int) -> Path | None:
    """Save on all processes (collective); the main process renames and prunes old ones."""
    root = checkpoint_root(output_dir)
    tmp, final = root / f".tmp-step-{step}", root / f"step-{step}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic_write_json(tmp / STATE_FILE, state)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Any, path: Path) -> dict:
    """Restore model/optimizer/scheduler/RNG from ``path``; returns its trainer state."""
    # strict=False: with LoRA the checkpoint holds only the adapter tensors.
    accelerator.load_state(str(path), strict=False)
    return read_json(path / STATE_FILE)


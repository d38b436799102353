"""The shared training core: one accelerate loop, pluggable losses, peft LoRA, checkpoint/resume.

Recipes call::

    from llmgen.training import TrainConfig, train, register_loss, LossState, sequence_logprobs

    @register_loss("npo", needs_reference=True, streams=("forget", "retain"))
    def npo(model, batch, state): ...

    result = train(TrainConfig(loss="npo", loss_args={"beta": 0.1}, ...), model=m, tokenizer=tok,
                   train_dataset={"forget": forget_ds, "retain": retain_ds})
"""

from llmgen.training.config import TrainConfig
from llmgen.training.losses import (
    IGNORE_INDEX,
    LOSSES,
    LossState,
    get_loss,
    is_main_process,
    model_inputs,
    register_loss,
    sequence_logprobs,
    token_logprobs,
)

__all__ = [
    "IGNORE_INDEX", "LOSSES", "LossState", "TrainConfig", "TrainResult", "get_loss", "is_main_process", "model_inputs", "register_loss",
    "sequence_logprobs", "token_logprobs", "train",
]


def __getattr__(name: str):
    # The loop imports accelerate/peft; load it only when a caller asks for it.
    if name in ("train", "TrainResult"):
        from llmgen.training import loop

        return getattr(loop, name)
    raise AttributeError(name)

"""The shared training core: one accelerate loop, pluggable losses, peft LoRA, checkpoint/resume.

Recipes call::

    from llmgen.training import TrainConfig, train, register_loss, LossState, sequence_logprobs

    @register_loss("npo", needs_reference=True, streams=("forget", "retain"))
    def npo(model, batch, state): ...

    result = train(TrainConfig(loss="npo", loss_args={"beta": 0.1}, ...), model=m, tokenizer=tok,
                   train_dataset={"forget": forget_ds, "retain": retain_ds})
"""

from llmgen.training.config import TrainConfig

__all__ = [
    "IGNORE_INDEX", "LOSSES", "LossState", "TrainConfig", "TrainResult", "get_loss", "is_main_process", "model_inputs", "register_loss",
    "sequence_logprobs", "token_logprobs", "train",
]
_LOOP_NAMES = frozenset({"train", "TrainResult"})
_LOSS_NAMES = frozenset(__all__) - _LOOP_NAMES - {"TrainConfig"}  # the rest of __all__ is llmgen.training.losses'


def __getattr__(name: str):
    # The losses import torch, the loop accelerate/peft; load them only when a caller asks for them,
    # so that the CLI (which reads TrainConfig's fields at start-up) starts without torch.
    if name in _LOSS_NAMES:
        from llmgen.training import losses

        return getattr(losses, name)
    if name in _LOOP_NAMES:
        from llmgen.training import loop

        return getattr(loop, name)
    raise AttributeError(name)

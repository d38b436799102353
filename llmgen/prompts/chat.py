"""Chat templating, in one place for every backend and recipe: a prompt is text or a list of chat
messages, and messages become text only through the model's own chat template."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

from llmgen.errors import LlmgenError

Message = dict[str, str]
Prompt = Union[str, Sequence[Message]]  # noqa: UP007 - a runtime alias, kept readable


def apply_chat_template(tokenizer, prompt: Prompt, system: str | None = None) -> str:
    """Render a user prompt or a list of chat messages with the model's chat template.

    The result ends where the assistant answers. This is the only place chat templates are applied
    (``llmgen eval --apply-chat-template``, FormatSpread, and TOFU's ``chat`` prompt template).
    """
    if getattr(tokenizer, "chat_template", None) is None:
        raise LlmgenError("this model's tokenizer has no chat template; use a plain prompt "
                          "(no --apply-chat-template, no prompt template 'chat')")
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    else:
        messages = [dict(m) for m in prompt]
        for m in messages:
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise LlmgenError(f"a chat message needs 'role' and 'content', got {m!r}")
    if system:
        messages = [{"role": "system", "content": system}] + messages
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def render_prompt(tokenizer, prompt: Prompt) -> str:
    """The text a prompt stands for: a string as it is, chat messages through the chat template."""
    return prompt if isinstance(prompt, str) else apply_chat_template(tokenizer, prompt)

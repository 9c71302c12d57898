"""Render a chat prompt with a tokenizer's chat template, continuing a final assistant message (prefill).

A message list that ends with an ``assistant`` message is a *prefill*: the model continues that message
instead of starting a new turn (``apply_chat_template(continue_final_message=True)``, the same switch vLLM's
chat API and server take). Logprob judges use it to read the next-token distribution right after a fixed
answer prefix such as ``"[["`` or ``"Score: "`` (G-Eval style, arXiv 2303.16634). Any other message list gets
``add_generation_prompt=True``. The transformers and vLLM generators both render through :func:`render_chat`,
so they see the same text.
"""

from __future__ import annotations

from typing import Any

__all__ = ["continues_final_message", "render_chat"]


def continues_final_message(messages: list[dict[str, Any]]) -> bool:
    """True when the last message is the assistant's: the prompt is a prefill to continue."""
    return bool(messages) and messages[-1].get("role") == "assistant"


def render_chat(tokenizer: Any, messages: list[dict[str, Any]]) -> str:
    """The text the model sees for ``messages`` (a normalised message list)."""
    if continues_final_message(messages):
        return tokenizer.apply_chat_template(messages, tokenize=False, continue_final_message=True)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

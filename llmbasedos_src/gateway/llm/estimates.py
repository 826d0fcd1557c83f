"""Token counts the gateway works out itself: an upper bound of a prompt (what a call reserves) and a
typical estimate (what a completed call costs when its provider sent no count). Pure, no tokenizer: the
gateway serves any model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

__all__ = ["prompt_bound", "estimate_tokens"]

# Chat templates wrap each message in role markers and open the answer with a few more; no common template
# spends more than this.
_TOKENS_PER_MESSAGE = 8
_TOKENS_PER_CALL = 8
_PROMPT_OPTIONS = ("tools", "tool_choice", "response_format")  # providers count these as prompt


def estimate_tokens(text: str) -> int:
    """A typical count, for a call that completed without the provider's own: about four characters a token."""
    return (len(text) + 3) // 4


def prompt_bound(messages: list[dict[str, Any]] | list[str], options: Mapping[str, Any] | None = None) -> int:
    """An upper bound of the prompt tokens of these messages (or embedding inputs) and options.

    Every token of a byte-level BPE or SentencePiece vocabulary stands for at least one byte, so the UTF-8 size
    of the text bounds its tokens whatever the model; the chat template's markers are added per message.
    """
    total = _TOKENS_PER_CALL
    for message in messages:
        if isinstance(message, str):
            total += len(message.encode("utf-8"))
            continue
        total += _TOKENS_PER_MESSAGE
        for key in ("content", "name", "tool_call_id"):
            value = message.get(key)
            if isinstance(value, str):
                total += len(value.encode("utf-8"))
        if message.get("tool_calls"):
            total += len(orjson.dumps(message["tool_calls"]))
    for name in _PROMPT_OPTIONS:
        if options and name in options:
            total += len(orjson.dumps(options[name]))
    return total

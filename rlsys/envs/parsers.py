"""Tool-call parsers, chosen by `rollout.multi_turn.parser`: text of one model turn -> calls.

    get_parser("tag").parse("[calc:12*34]")  # [ToolCall("calc", {"expression": "12*34"})]
    get_parser("hermes").parse('<tool_call>{"name": "calc", "arguments": {"expression": "12*34"}}</tool_call>')

`tag` is the embedded task's compact format, `[name:argument]` (one string argument, passed
as the tool's first parameter), cheap on a character tokenizer; a turn stops at its `]`.
`hermes` is the format of Qwen2.5/Hermes chat models: a JSON object per `<tool_call>` block;
the turn ends at the model's end-of-turn token. A block that is not valid JSON becomes a call
with `error` set, so the environment reports it to the model instead of crashing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict = field(default_factory=dict)  # keyword arguments; {"_positional": s} for the tag format
    error: str | None = None  # the call could not be parsed


class TagParser:
    """`[name:argument]`; stop strings: the closing `]`."""

    stop = ("]",)
    _CALL = re.compile(r"\[([A-Za-z_][A-Za-z0-9_]*):([^\]\[]*)\]")

    def parse(self, text: str) -> list[ToolCall]:
        return [ToolCall(m.group(1), {"_positional": m.group(2)}) for m in self._CALL.finditer(text)]


class HermesParser:
    """`<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks (Qwen2.5 / Hermes)."""

    stop = ()
    _BLOCK = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)

    def parse(self, text: str) -> list[ToolCall]:
        calls = []
        for match in self._BLOCK.finditer(text):
            body = match.group(1).strip()
            try:
                obj = json.loads(body)
            except json.JSONDecodeError as exc:
                calls.append(ToolCall("?", {}, f"tool call is not valid JSON ({exc.msg}): {body[:80]!r}"))
                continue
            if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
                calls.append(ToolCall("?", {}, f"tool call needs a JSON object with a 'name': {body[:80]!r}"))
                continue
            arguments: Any = obj.get("arguments", {})
            if isinstance(arguments, str):  # some models emit the arguments as a JSON string
                try:
                    arguments = json.loads(arguments)
                except json.JSONDecodeError:
                    pass
            if not isinstance(arguments, dict):
                calls.append(ToolCall(obj["name"], {}, f"'arguments' must be an object, got {arguments!r}"))
                continue
            calls.append(ToolCall(obj["name"], arguments))
        return calls


PARSERS = {"tag": TagParser, "hermes": HermesParser}


def get_parser(name: str):
    if name not in PARSERS:
        raise ValueError(f"rollout.multi_turn.parser={name!r}: expected one of {sorted(PARSERS)}")
    return PARSERS[name]()

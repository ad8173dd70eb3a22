"""Tools: plain Python callables registered by name, each call bounded by a timeout.

    registry = ToolRegistry({"calc": "rlsys.envs.calculator:calculator"}, timeout_s=5.0)
    registry.call(ToolCall("calc", {"_positional": "12*34"}))   # "408"

A tool returns something printable (str, number, JSON-able); `call` returns its text, or
raises `ToolError` naming the tool and the cause when the tool is unknown, raises, times
out or returns something that is not text-like (None, bytes, an object without a useful
str). A call runs on a daemon thread: one that hangs past `timeout_s` is abandoned (Python
cannot kill a thread; it keeps running in the background) and the rollout goes on.
"""

from __future__ import annotations

import json
import math
import queue
import threading
from typing import Any, Callable

from rlsys.envs.base import load_object
from rlsys.envs.parsers import ToolCall

MAX_RESULT_CHARS = 200


class ToolError(RuntimeError):
    """A tool call failed: unknown tool, bad arguments, an exception, a timeout or garbage output."""


def result_text(value: Any) -> str:
    """A tool's return value as observation text; ToolError for values that are not text-like."""
    if isinstance(value, bool) or value is None or isinstance(value, (bytes, bytearray)):
        raise ToolError(f"returned {value!r}, expected text or a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolError(f"returned a non-finite number {value}")
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        text = value
    elif isinstance(value, (dict, list)):
        try:
            text = json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise ToolError(f"returned a {type(value).__name__} that is not JSON ({exc})") from exc
    else:
        raise ToolError(f"returned a {type(value).__name__}, expected text, a number or JSON")
    if len(text) > MAX_RESULT_CHARS:
        raise ToolError(f"returned {len(text)} characters, more than {MAX_RESULT_CHARS}")
    return text


def call_with_timeout(fn: Callable, args: tuple, kwargs: dict, timeout_s: float):
    """fn(*args, **kwargs) on a daemon thread; TimeoutError after timeout_s, the exception re-raised."""
    box: queue.Queue = queue.Queue(maxsize=1)

    def run() -> None:
        try:
            box.put((True, fn(*args, **kwargs)))
        except BaseException as exc:  # noqa: BLE001 -- handed to the caller
            box.put((False, exc))

    threading.Thread(target=run, daemon=True, name="rlsys-tool-call").start()
    try:
        ok, value = box.get(timeout=timeout_s)
    except queue.Empty:
        raise TimeoutError(f"no result after {timeout_s:g} s") from None
    if not ok:
        raise value
    return value


class ToolRegistry:
    """name -> callable (or a dotted path to one, loaded here: a bad path fails at start)."""

    def __init__(self, tools: dict[str, Any], timeout_s: float = 5.0):
        self.timeout_s = float(timeout_s)
        self.tools: dict[str, Callable] = {}
        for name, tool in dict(tools).items():
            fn = load_object(tool, f"rollout.multi_turn.tools.{name}") if isinstance(tool, str) else tool
            if not callable(fn):
                raise ValueError(f"rollout.multi_turn.tools.{name}: {tool!r} is not callable")
            self.tools[name] = fn

    def call(self, call: ToolCall, extra_kwargs: dict | None = None) -> str:
        """The text of one call's result; ToolError naming the tool otherwise."""
        if call.error:
            raise ToolError(call.error)
        if call.name not in self.tools:
            raise ToolError(f"unknown tool {call.name!r}; tools: {sorted(self.tools)}")
        kwargs = dict(call.arguments)
        args = (kwargs.pop("_positional"),) if "_positional" in kwargs else ()
        kwargs.update(extra_kwargs or {})
        try:
            value = call_with_timeout(self.tools[call.name], args, kwargs, self.timeout_s)
        except TimeoutError as exc:
            raise ToolError(f"tool {call.name!r} timed out: {exc}") from None
        except ToolError as exc:
            raise ToolError(f"tool {call.name!r}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 -- user code: reported per sample
            raise ToolError(f"tool {call.name!r} raised {type(exc).__name__}: {exc}") from exc
        try:
            return result_text(value)
        except ToolError as exc:
            raise ToolError(f"tool {call.name!r} {exc}") from None

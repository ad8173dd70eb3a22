"""`ToolEnv`, the default environment: run the tool calls of a model turn, answer with their results.

A turn with no tool call ends the trajectory (the model has answered). A turn with calls gets
one observation: each result formatted with `result_format` (default "({})"), joined. A call
that fails (unknown tool, bad JSON, an exception, a timeout, garbage output) either stops the
rollout with `ToolError` naming the sample (`on_tool_error=raise`) or becomes the observation
"(error: ...)" with `tool_error_penalty` added to the trajectory's reward and the error kept
for the sample (`penalty`). Per-row tool arguments come from verl's
`extra_info.tools_kwargs.<tool>` (its nested `execute_kwargs` too): extra keyword arguments
of every call of that tool.
"""

from __future__ import annotations

from rlsys.envs.base import Environment, StepResult
from rlsys.envs.tools import ToolError, ToolRegistry

MAX_ERROR_CHARS = 60  # of the error text the model sees; the sample's error keeps all of it


def row_tool_kwargs(row: dict) -> dict[str, dict]:
    """tool name -> extra call kwargs from `row["extra_info"]["tools_kwargs"]` (verl's layout)."""
    extra = row.get("extra_info") or {}
    tools_kwargs = extra.get("tools_kwargs") or {} if isinstance(extra, dict) else {}
    out = {}
    for name, value in tools_kwargs.items():
        value = dict(value or {})
        if "execute_kwargs" in value or "create_kwargs" in value:
            value = dict(value.get("execute_kwargs") or {})
        out[name] = value
    return out


class ToolEnv(Environment):
    def __init__(self, tools: ToolRegistry, parser, on_tool_error: str = "penalty",
                 tool_error_penalty: float = 0.0, result_format: str = "({})"):
        if on_tool_error not in ("penalty", "raise"):
            raise ValueError(f"rollout.multi_turn.on_tool_error={on_tool_error!r}: expected penalty or raise")
        self.tools, self.parser = tools, parser
        self.on_tool_error, self.tool_error_penalty = on_tool_error, float(tool_error_penalty)
        self.result_format = result_format
        self.tool_kwargs: dict[str, dict] = {}

    def reset(self, row: dict) -> str | None:
        self.tool_kwargs = row_tool_kwargs(row)
        return None

    def step(self, turn_text: str) -> StepResult:
        calls = self.parser.parse(turn_text)
        if not calls:
            return StepResult(None, None, done=True)
        texts, errors = [], []
        for call in calls:
            try:
                texts.append(self.result_format.format(self.tools.call(call, self.tool_kwargs.get(call.name))))
            except ToolError as exc:
                if self.on_tool_error == "raise":
                    raise
                errors.append(str(exc))
                texts.append(self.result_format.format(f"error: {str(exc)[:MAX_ERROR_CHARS]}"))
        reward = self.tool_error_penalty * len(errors) if errors else None
        return StepResult("".join(texts), reward, done=False, error="; ".join(errors) or None)

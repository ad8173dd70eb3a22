"""Environments for multi-turn rollouts (docs/multi_turn.md).

An environment is a class with `reset(row) -> first observation | None` and
`step(turn_text) -> StepResult(observation, reward, done)`; one instance per trajectory holds
that trajectory's state. `ToolEnv` (the default) runs tool calls found in the model's turn;
tools are plain callables registered by name. `rollout.multi_turn.env` / `.tools` point at
your own with a dotted path, as `reward.fn` does.
"""

from rlsys.envs.base import Environment, StepResult, load_object
from rlsys.envs.parsers import PARSERS, ToolCall, get_parser
from rlsys.envs.tools import ToolError, ToolRegistry

__all__ = ["Environment", "StepResult", "load_object", "PARSERS", "ToolCall", "get_parser", "ToolError",
           "ToolRegistry"]

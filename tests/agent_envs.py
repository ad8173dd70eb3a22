"""Environments and tools used by the multi-turn tests (importable by Ray workers as tests.agent_envs)."""

from __future__ import annotations

import time

from rlsys.envs import Environment, StepResult

OBSERVATION = "[ok]"


class EchoEnv(Environment):
    """Answers every model turn with OBSERVATION until `turns` turns are done."""

    def __init__(self, turns: int = 3):
        super().__init__()
        self.turns = turns

    def reset(self, row):
        self.seen = 0
        self.ground_truth = row["ground_truth"]
        return None

    def step(self, turn_text):
        self.seen += 1
        if self.seen >= self.turns:
            return StepResult(None, 0.5, done=True)
        return StepResult(OBSERVATION, None, done=False)


def raising_tool(expression: str) -> str:
    raise RuntimeError(f"broken tool on {expression!r}")


def hanging_tool(expression: str) -> str:
    time.sleep(3600)
    return "never"


def garbage_tool(expression: str):
    return object()

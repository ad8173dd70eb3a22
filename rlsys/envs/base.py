"""The environment interface of multi-turn rollouts, and dotted-path loading of user code.

    class Guess(Environment):
        def reset(self, row):                     # row: ground_truth, data_source, extra_info
            self.answer = row["ground_truth"]
            return None                           # nothing to add after the prompt
        def step(self, turn_text):
            if self.answer in turn_text:
                return StepResult(None, 1.0, True)
            return StepResult(" no, again:", 0.0, False)

The agent loop (rlsys/rollout/agent) makes one instance per trajectory, calls `reset` once,
then `step` after every model turn with the text of that turn only. An observation is
tokenised once and appended to the trajectory (trained on with response_mask 0); `reward`
(None = 0) adds up over the trajectory and is added to the reward function's score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rlsys.config.objects import load_object  # noqa: F401 -- re-exported: `from rlsys.envs import load_object`


@dataclass(frozen=True)
class StepResult:
    """What an environment returns after one model turn."""

    observation: str | None  # text appended before the model's next turn; None: nothing
    reward: float | None = None  # added to this trajectory's score; None counts as 0
    done: bool = False  # True: the trajectory ends after this turn
    error: str | None = None  # a per-sample error (e.g. a tool that raised), reported, not raised


class Environment:
    """Base class (optional: any object with these two methods works)."""

    def __init__(self, **kwargs: Any):
        self.kwargs = kwargs

    def reset(self, row: dict) -> str | None:
        """Start a trajectory for `row` (keys ground_truth, data_source, extra_info); the first
        observation (appended after the prompt, before the first turn) or None."""
        return None

    def step(self, turn_text: str) -> StepResult:
        """React to one model turn (its text only)."""
        raise NotImplementedError

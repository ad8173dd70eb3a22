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

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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


def load_object(spec: str, key: str) -> Any:
    """The object at `package.module:name` or `path/to/file.py:name`; ValueError naming `key`."""
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(f"{key}={spec!r}: expected 'package.module:name' or 'file.py:name'")
    target, name = spec.rsplit(":", 1)
    if target.endswith(".py"):
        path = Path(target)
        if not path.exists():
            raise ValueError(f"{key}={spec!r}: file {path} does not exist")
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise ValueError(f"{key}={spec!r}: cannot import {target} ({exc})") from exc
    if not hasattr(module, name):
        raise ValueError(f"{key}={spec!r}: {target} has no attribute {name!r}")
    return getattr(module, name)

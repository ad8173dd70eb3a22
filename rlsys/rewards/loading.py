"""Resolve `reward.fn` (`package.module:function` or `path/to/file.py:function`) to a callable."""

from __future__ import annotations

from typing import Callable

from rlsys.config.objects import load_object
from rlsys.rewards.builtin import builtin_reward

RewardFn = Callable[..., float]


def load_reward_fn(spec: str | None) -> RewardFn:
    """Resolve `reward.fn`; None gives the built-in verifiers keyed by data_source."""
    if not spec:
        return builtin_reward
    return load_object(spec, "reward.fn", kind="function")

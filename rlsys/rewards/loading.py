"""Resolve `reward.fn` (`package.module:function` or `path/to/file.py:function`) to a callable."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Callable

from rlsys.rewards.builtin import builtin_reward

RewardFn = Callable[..., float]


def load_reward_fn(spec: str | None) -> RewardFn:
    """Resolve `reward.fn`; None gives the built-in verifiers keyed by data_source."""
    if not spec:
        return builtin_reward
    if ":" not in spec:
        raise ValueError(f"reward.fn={spec!r}: expected 'package.module:function' or 'file.py:function'")
    target, fn_name = spec.rsplit(":", 1)
    if target.endswith(".py"):
        path = Path(target)
        if not path.exists():
            raise ValueError(f"reward.fn={spec!r}: file {path} does not exist")
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    if not hasattr(module, fn_name):
        raise ValueError(f"reward.fn={spec!r}: {target} has no function {fn_name!r}")
    return getattr(module, fn_name)

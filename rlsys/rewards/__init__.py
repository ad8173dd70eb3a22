"""Rule-based reward functions, chosen by `data_source` or given as `reward.fn`.

A reward function is a plain callable
    fn(data_source: str, solution_str: str, ground_truth: str, extra_info: dict | None) -> float
(verl's signature). `reward.fn` names one as `package.module:function` or `path/to/file.py:function`.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Callable

RewardFn = Callable[..., float]


def _builtin(data_source: str, solution_str: str, ground_truth: str, extra_info=None) -> float:
    if data_source == "arithmetic":
        from rlsys.tasks.arithmetic import arithmetic_reward

        return arithmetic_reward(solution_str, ground_truth)
    raise ValueError(f"no built-in reward for data_source={data_source!r}; set reward.fn=package.module:function")


def load_reward_fn(spec: str | None) -> RewardFn:
    """Resolve `reward.fn`; None gives the built-in verifiers keyed by data_source."""
    if not spec:
        return _builtin
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

"""Waiting for a group's results, and turning Ray's failures into errors that name the rank.

`get_by_rank` waits on all ranks at once and raises on the first failure, so a rank that
died is reported even while its peers are blocked (e.g. in a collective waiting for it):
  - a method that raised    -> an exception of the original type, message prefixed with
                               "worker group 'g', method 'm', rank r: ..." and chained to
                               Ray's RayTaskError (which carries the remote traceback);
  - a dead worker process   -> WorkerDiedError naming group, method and rank;
  - no result in `timeout_s` -> TimeoutError naming the ranks still running.
"""

from __future__ import annotations

import copy
import re
import time
from typing import Optional


class WorkerDiedError(RuntimeError):
    """A worker process of a group died or is unreachable; the message names group, method, rank."""


def _summary(exc: BaseException) -> str:
    """First and last line of a Ray error (the last one holds a creation-task failure's cause)."""
    lines = [line for line in re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1].strip()}"


def _retyped(task_error, where: str) -> BaseException:
    """The worker's exception, same type, message prefixed by `where`."""
    cause = task_error.cause
    try:
        new = copy.copy(cause)
        new.args = (f"{where}: {cause}",)
        if where in str(new):
            return new
    except Exception:  # noqa: BLE001 - types that cannot be rebuilt fall back to Ray's wrapper
        pass
    fallback = task_error.as_instanceof_cause()  # subclass of RayTaskError and of the cause's type
    fallback.add_note(where)
    return fallback


def translate_ray_error(exc: BaseException, where: str) -> BaseException:
    """Map an exception from `ray.get` to the one the driver should see."""
    from ray.exceptions import RayActorError, RayTaskError

    if isinstance(exc, RayActorError):
        return WorkerDiedError(f"{where}: the worker process died or is unreachable "
                               f"({type(exc).__name__}: {_summary(exc)})")
    if isinstance(exc, RayTaskError):
        return _retyped(exc, where)
    return exc


def get_by_rank(refs: list, ranks: list[int], where: str, timeout_s: Optional[float] = None) -> list:
    """ray.get every ref (rank `ranks[i]` for `refs[i]`), outputs in the order of `refs`."""
    import ray

    position = {ref: i for i, ref in enumerate(refs)}
    outputs: list = [None] * len(refs)
    pending = list(refs)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while pending:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, pending = ray.wait(pending, num_returns=1, timeout=remaining)
        if not ready:
            late = [ranks[position[r]] for r in pending]
            raise TimeoutError(f"{where}: ranks {late} gave no result within {timeout_s:g} s")
        for ref in ready:
            i = position[ref]
            try:
                outputs[i] = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - re-raised with the rank named
                translated = translate_ray_error(exc, f"{where}, rank {ranks[i]}")
                if translated is exc:
                    raise
                raise translated from exc
    return outputs

"""Waiting for a group's results, and turning Ray's failures into errors that name the rank.

`get_by_rank` waits on all ranks at once and raises on the first failure, so a rank that
died is reported even while its peers are blocked (e.g. in a collective waiting for it):
  - a method that raised    -> an exception of the original type (or a same-named subclass of
                               it, for types whose str() ignores args: OSError,
                               CheckpointException), whose message is
                               "worker group 'g', method 'm', rank r: <Type>: <message>" on one
                               line, and chained to Ray's RayTaskError (the remote traceback);
  - a dead worker process   -> WorkerDiedError naming group, method and rank;
  - no result in `timeout_s` -> TimeoutError naming the ranks still running;
  - any of these while a node of the group is dead (given `rank_nodes`) -> NodeDiedError
                               naming the node and the group's ranks on it (nodes.py).
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


def one_line(exc: BaseException, with_type: bool = True) -> str:
    """`Type: message` on one line: a multi-line message keeps its first and last lines (the
    last one of a wrapper such as CheckpointException is the wrapped error, with its path)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = " ... ".join(lines[:1] + lines[-1:]) if len(lines) > 1 else "".join(lines)
    if not with_type:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _same_type(cause: BaseException, message: str) -> BaseException | None:
    """`cause` with args (message,), if its type's str() shows args (KeyError shows their repr)."""
    try:
        new = copy.copy(cause)
        new.args = (message,)
        return new if str(new) in (message, repr(message)) else None
    except Exception:  # noqa: BLE001 - a type that cannot be copied
        return None


def _same_named_subclass(cause: BaseException, message: str) -> BaseException | None:
    """`cause` rebuilt as a subclass of its type with the same name whose str() is `message`:
    for types whose str() ignores args (OSError shows errno/filename, CheckpointException its
    failures). isinstance checks and the printed type name stay those of the worker's error."""
    cls = type(cause)
    try:
        sub = type(cls.__name__, (cls,), {"__str__": lambda self: message, "__module__": cls.__module__,
                                          "__qualname__": cls.__qualname__})
        rebuilt = cause.__reduce_ex__(2)  # (cls, args[, state]): what copy.copy uses
        new = sub(*rebuilt[1])
        if len(rebuilt) > 2 and rebuilt[2]:
            new.__dict__.update(rebuilt[2])
        return new
    except Exception:  # noqa: BLE001 - e.g. a final type or a constructor wanting other arguments
        return None


class RemoteError(RuntimeError):
    """A worker's exception whose type could not be rebuilt on the driver; the message names it."""


def _retyped(task_error, where: str) -> BaseException:
    """The worker's exception, same type, message `where: message` on one line."""
    cause = task_error.cause
    message = f"{where}: {one_line(cause, with_type=False)}"
    return (_same_type(cause, message) or _same_named_subclass(cause, message)
            or RemoteError(f"{where}: {one_line(cause)}"))


def translate_ray_error(exc: BaseException, where: str) -> BaseException:
    """Map an exception from `ray.get` to the one the driver should see."""
    from ray.exceptions import RayActorError, RayTaskError

    if isinstance(exc, RayActorError):
        return WorkerDiedError(f"{where}: the worker process died or is unreachable "
                               f"({type(exc).__name__}: {_summary(exc)})")
    if isinstance(exc, RayTaskError):
        return _retyped(exc, where)
    return exc


def get_by_rank(refs: list, ranks: list[int], where: str, timeout_s: Optional[float] = None,
                rank_nodes: Optional[list] = None) -> list:
    """ray.get every ref (rank `ranks[i]` for `refs[i]`), outputs in the order of `refs`.

    `rank_nodes` (RankNode per rank of the group) turns a failure during a node's death into
    a NodeDiedError naming that node and its ranks."""
    try:
        return _get_by_rank(refs, ranks, where, timeout_s)
    except Exception as exc:
        if not rank_nodes:
            raise
        from rlsys.single_controller.nodes import node_death_error

        died = node_death_error(rank_nodes, where, exc)
        if died is None:
            raise
        raise died from exc


def _get_by_rank(refs: list, ranks: list[int], where: str, timeout_s: Optional[float]) -> list:
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

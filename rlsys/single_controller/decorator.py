"""`@register`: a worker method says how the driver splits its inputs and gathers its outputs.

    class Actor(Worker):
        @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO)
        def compute_log_prob(self, data: DataProto) -> DataProto: ...

`RayWorkerGroup` binds every registered method as a group method that runs
dispatch_fn(group, *args, **kwargs) -> per-rank (args, kwargs), calls the ranks the execute
mode names, and returns collect_fn(group, outputs). All functions here are pure, so they are
tested without Ray.
"""

from __future__ import annotations

import functools
import inspect
from enum import Enum
from typing import Callable

from rlsys.protocol import DataProto, DataProtoFuture, pad_dataproto_to_divisor, unpad_dataproto

MAGIC_ATTR = "_rlsys_register"


class Dispatch(Enum):
    ONE_TO_ALL = "one_to_all"
    ALL_TO_ALL = "all_to_all"
    RANK_ZERO = "rank_zero"
    DP_COMPUTE = "dp_compute"
    DP_COMPUTE_PROTO = "dp_compute_proto"
    DP_COMPUTE_PROTO_WITH_FUNC = "dp_compute_proto_with_func"
    DP_COMPUTE_METRIC = "dp_compute_metric"


class Execute(Enum):
    ALL = "all"
    RANK_ZERO = "rank_zero"


def register(dispatch_mode=Dispatch.ALL_TO_ALL, execute_mode=Execute.ALL, blocking: bool = True):
    """Mark a worker method for binding on the group; works on plain and `async def` methods."""
    if not isinstance(dispatch_mode, (Dispatch, dict)):
        raise ValueError(f"register: dispatch_mode must be a Dispatch or a dict, got {dispatch_mode!r}")
    if isinstance(dispatch_mode, dict) and set(dispatch_mode) != {"dispatch_fn", "collect_fn"}:
        raise ValueError(f"register: a custom dispatch_mode needs exactly 'dispatch_fn' and 'collect_fn', "
                         f"got {sorted(dispatch_mode)}")
    if not isinstance(execute_mode, Execute):
        raise ValueError(f"register: execute_mode must be an Execute, got {execute_mode!r}")

    def decorator(fn: Callable) -> Callable:
        attrs = {"dispatch_mode": dispatch_mode, "execute_mode": execute_mode, "blocking": blocking}
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def inner(*args, **kwargs):
                return await fn(*args, **kwargs)
        else:
            @functools.wraps(fn)
            def inner(*args, **kwargs):
                return fn(*args, **kwargs)
        setattr(inner, MAGIC_ATTR, attrs)
        return inner

    return decorator


def registered_attrs(fn: Callable) -> dict | None:
    return getattr(fn, MAGIC_ATTR, None)


# ---- dispatch functions: (group, args, kwargs) -> (per-rank args, per-rank kwargs) ----------
# Every returned arg / kwarg value is a list with one entry per rank.

def _broadcast(wg, *args, _method="method", **kwargs):
    n = wg.world_size
    return tuple([a] * n for a in args), {k: [v] * n for k, v in kwargs.items()}


def _check_per_rank_lists(wg, method: str, args, kwargs, what: str):
    n = wg.world_size
    for name, value in [(f"argument {i}", a) for i, a in enumerate(args)] + list(kwargs.items()):
        if not isinstance(value, (list, tuple)) or len(value) != n:
            got = f"a {type(value).__name__} of length {len(value)}" if isinstance(value, (list, tuple)) else type(value).__name__
            raise ValueError(f"{method}: {what} needs {name} to be a list with one entry per rank "
                             f"({n} ranks), got {got}")
    return tuple(list(a) for a in args), {k: list(v) for k, v in kwargs.items()}


def dispatch_all_to_all(wg, *args, _method="method", **kwargs):
    return _check_per_rank_lists(wg, _method, args, kwargs, "Dispatch.ALL_TO_ALL")


def dispatch_dp_compute(wg, *args, _method="method", **kwargs):
    return _check_per_rank_lists(wg, _method, args, kwargs, "Dispatch.DP_COMPUTE")


def _split_protos(wg, method: str, args, kwargs):
    """Chunk every DataProto(Future) argument by world size, padding when it does not divide."""
    n = wg.world_size
    pad_size = None

    def split(name, value):
        nonlocal pad_size
        if isinstance(value, DataProtoFuture):
            value = value.get()
        if not isinstance(value, DataProto):
            raise ValueError(f"{method}: Dispatch.DP_COMPUTE_PROTO needs {name} to be a DataProto, "
                             f"got {type(value).__name__}")
        value, pad = pad_dataproto_to_divisor(value, n)
        if pad_size is not None and pad != pad_size:
            raise ValueError(f"{method}: DataProto arguments have different batch sizes")
        pad_size = pad
        return value.chunk(n)

    split_args = tuple(split(f"argument {i}", a) for i, a in enumerate(args))
    split_kwargs = {k: split(k, v) for k, v in kwargs.items()}
    return split_args, split_kwargs, pad_size or 0


def dispatch_dp_compute_proto(wg, *args, _method="method", **kwargs):
    split_args, split_kwargs, pad = _split_protos(wg, _method, args, kwargs)
    split_kwargs["_pad_size"] = pad  # taken out by the group before the call, passed to collect
    return split_args, split_kwargs


def dispatch_dp_compute_proto_with_func(wg, fn, *args, _method="method", **kwargs):
    if not callable(fn):
        raise ValueError(f"{_method}: Dispatch.DP_COMPUTE_PROTO_WITH_FUNC needs a function first, got {type(fn).__name__}")
    split_args, split_kwargs, pad = _split_protos(wg, _method, args, kwargs)
    split_kwargs["_pad_size"] = pad
    return ([fn] * wg.world_size,) + split_args, split_kwargs


# ---- collect functions: (group, outputs) -> result ---------------------------------------

def collect_list(wg, outputs):
    return list(outputs)


def collect_rank_zero(wg, outputs):
    return outputs[0]


def collect_dp_compute_proto(wg, outputs, pad_size: int = 0):
    for rank, out in enumerate(outputs):
        if not isinstance(out, DataProto):
            raise TypeError(f"Dispatch.DP_COMPUTE_PROTO expects a DataProto from every rank; "
                            f"rank {rank} returned {type(out).__name__}")
    return unpad_dataproto(DataProto.concat(list(outputs)), pad_size)


def _rank_zero_args(wg, *args, _method="method", **kwargs):
    return tuple([a] for a in args), {k: [v] for k, v in kwargs.items()}


PREDEFINED = {
    Dispatch.ONE_TO_ALL: (_broadcast, collect_list),
    Dispatch.ALL_TO_ALL: (dispatch_all_to_all, collect_list),
    Dispatch.RANK_ZERO: (_rank_zero_args, collect_rank_zero),
    Dispatch.DP_COMPUTE: (dispatch_dp_compute, collect_list),
    Dispatch.DP_COMPUTE_PROTO: (dispatch_dp_compute_proto, collect_dp_compute_proto),
    Dispatch.DP_COMPUTE_PROTO_WITH_FUNC: (dispatch_dp_compute_proto_with_func, collect_dp_compute_proto),
    Dispatch.DP_COMPUTE_METRIC: (dispatch_dp_compute_proto, collect_list),
}


def get_dispatch_fns(dispatch_mode) -> tuple[Callable, Callable, bool]:
    """Returns (dispatch_fn, collect_fn, is_builtin). Custom fns take (group, *args, **kwargs)."""
    if isinstance(dispatch_mode, dict):
        return dispatch_mode["dispatch_fn"], dispatch_mode["collect_fn"], False
    dispatch_fn, collect_fn = PREDEFINED[dispatch_mode]
    return dispatch_fn, collect_fn, True


def returns_dataproto(dispatch_mode) -> bool:
    return dispatch_mode in (Dispatch.DP_COMPUTE_PROTO, Dispatch.DP_COMPUTE_PROTO_WITH_FUNC)


def call_dispatch(dispatch_mode, wg, method: str, args, kwargs) -> tuple[tuple, dict]:
    dispatch_fn, _, builtin = get_dispatch_fns(dispatch_mode)
    if builtin:
        return dispatch_fn(wg, *args, _method=method, **kwargs)
    return dispatch_fn(wg, *args, **kwargs)


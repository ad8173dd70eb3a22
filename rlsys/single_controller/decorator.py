"""`@register`: a worker method says how the driver splits its inputs and gathers its outputs.

    class Actor(Worker):
        @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO)
        def compute_log_prob(self, data: DataProto) -> DataProto: ...

    actor_wg.compute_log_prob(batch)   # driver: batch split over the ranks, outputs concatenated

`RayWorkerGroup` binds every registered method as a group method that runs
`dispatch_fn(group, *args, **kwargs) -> (per-rank args, per-rank kwargs)` (every value a list
with one entry per rank), calls the ranks that the execute mode names, and returns
`collect_fn(group, outputs)`. Before dispatch, the DataProto modes pad the batch to a
multiple of the world size (`prepare_proto_args`); the group strips the padding from the result.
Everything here is pure (the group is only asked for `world_size`), so it is tested without Ray.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

from rlsys.protocol import DataProto, DataProtoFuture, pad_dataproto_to_divisor, unpad_dataproto

MAGIC_ATTR = "_rlsys_register"


class _DynamicEnumMeta(type):
    def __iter__(cls):
        return iter(list(cls._registry.values()))

    def __contains__(cls, item) -> bool:
        return item in cls._registry if isinstance(item, str) else item in cls._registry.values()

    def __getitem__(cls, name: str):
        return cls._registry[name]

    def __len__(cls) -> int:
        return len(cls._registry)


class _DynamicEnum(metaclass=_DynamicEnumMeta):
    """An enum that can grow at run time (`register`), as verl's Dispatch can. Members compare by
    identity; they pickle by name, so a member registered on the driver arrives as the same
    member (registered on arrival) in a worker process."""

    _registry: dict

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls._registry = {}

    def __init__(self, name: str, value: str):
        self.name, self.value = name, value

    def __repr__(self) -> str:
        return f"<{type(self).__name__}.{self.name}>"

    def __reduce__(self):
        return type(self).register, (self.name,)

    @classmethod
    def register(cls, name: str):
        """The member called `name` (upper-cased), created if new."""
        key = name.upper()
        if key not in cls._registry:
            cls._registry[key] = cls(key, key.lower())
            setattr(cls, key, cls._registry[key])
        return cls._registry[key]

    @classmethod
    def remove(cls, name: str):
        """Forget the member called `name` (tests that register modes clean up with this)."""
        member = cls._registry.pop(name.upper())
        delattr(cls, member.name)
        return member

    @classmethod
    def names(cls) -> list[str]:
        return list(cls._registry)


class Dispatch(_DynamicEnum):
    """ONE_TO_ALL: same args to every rank -> list. ALL_TO_ALL: verl's rule, below -> list.
    RANK_ZERO: only rank 0 runs -> its output. DP_COMPUTE: every arg a per-rank list -> list.
    DP_COMPUTE_PROTO: DataProtos chunked by rank -> concatenated DataProto.
    DP_COMPUTE_PROTO_WITH_FUNC: first arg (a function) broadcast, DataProtos chunked.
    DP_COMPUTE_METRIC: DataProtos chunked -> list of per-rank outputs."""


class Execute(_DynamicEnum):
    """ALL ranks run, or only RANK_ZERO."""


for _name in ("ONE_TO_ALL", "ALL_TO_ALL", "RANK_ZERO", "DP_COMPUTE", "DP_COMPUTE_PROTO",
              "DP_COMPUTE_PROTO_WITH_FUNC", "DP_COMPUTE_METRIC"):
    Dispatch.register(_name)
Execute.register("ALL")
Execute.register("RANK_ZERO")

# A dispatch_fn may put this key in the kwargs it returns (an int, not a per-rank list): the
# group pops it and strips that many trailing rows from the collected DataProto (mesh.py uses it).
PADDING_SIZE_KEY = "_rlsys_padding_size"


def register(dispatch_mode=Dispatch.ALL_TO_ALL, execute_mode=Execute.ALL, blocking: bool = True,
             materialize_futures: bool = True):
    """Mark a worker method for binding on its group; works on plain and `async def` methods.

    `dispatch_mode` is a `Dispatch` or `{"dispatch_fn": f, "collect_fn": g}` with
    `f(group, *args, **kwargs) -> (args, kwargs)` and `g(group, outputs) -> result`.
    With `blocking=False` the group method returns a `DataProtoFuture` for the
    DP_COMPUTE_PROTO modes and a list of Ray ObjectRefs (one per called rank) otherwise.
    `materialize_futures` is accepted for verl code: DataProtoFuture arguments are always
    resolved on the driver before dispatch here, so the worker never sees one.
    """
    _check_dispatch_mode(dispatch_mode)
    if not isinstance(execute_mode, Execute):
        raise ValueError(f"register: execute_mode must be an Execute, got {execute_mode!r}")
    attrs = {"dispatch_mode": dispatch_mode, "execute_mode": execute_mode, "blocking": bool(blocking)}

    def decorator(fn: Callable) -> Callable:
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


def _check_dispatch_mode(dispatch_mode) -> None:
    """ValueError (also an AssertionError, as verl's check raises) unless a Dispatch or a valid dict."""
    if isinstance(dispatch_mode, dict):
        if set(dispatch_mode) != {"dispatch_fn", "collect_fn"} or not all(map(callable, dispatch_mode.values())):
            raise DispatchModeError("register: a custom dispatch_mode must be {'dispatch_fn': f, 'collect_fn': g} "
                                    f"with callables, got keys {sorted(dispatch_mode)}")
    elif not isinstance(dispatch_mode, Dispatch):
        raise DispatchModeError(f"register: dispatch_mode must be a Dispatch or a dict, got {dispatch_mode!r}")


class DispatchModeError(ValueError, AssertionError):
    """A bad dispatch mode: a ValueError here, an AssertionError where verl code expects one."""


def registered_methods(cls: type) -> dict[str, dict]:
    """{method name: register attrs} for every `@register`-ed method of `cls` and its bases."""
    out = {}
    for name in dir(cls):
        attrs = getattr(getattr(cls, name, None), MAGIC_ATTR, None)
        if attrs is not None:
            out[name] = attrs
    return out


# ---- dispatch functions: (group, *args, **kwargs) -> (per-rank args, per-rank kwargs) ----

def _named_values(args, kwargs):
    return [(f"argument {i}", a) for i, a in enumerate(args)] + [(f"argument {k!r}", v) for k, v in kwargs.items()]


def dispatch_one_to_all(wg, *args, **kwargs):
    n = wg.world_size
    return tuple([a] * n for a in args), {k: [v] * n for k, v in kwargs.items()}


def dispatch_rank_zero(wg, *args, **kwargs):
    return tuple([a] for a in args), {k: [v] for k, v in kwargs.items()}


def _check_per_rank_lists(wg, args, kwargs) -> None:
    n = wg.world_size
    for name, value in _named_values(args, kwargs):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{name} must be a list with one entry per rank ({n} ranks), got {type(value).__name__}")
        if len(value) != n:
            raise ValueError(f"{name} must be a list with one entry per rank ({n} ranks), got length {len(value)}")


def splits_across_ranks(world_size: int, args, kwargs) -> bool:
    """verl's rule for ALL_TO_ALL and execute_all_async: split only when every argument is a
    list of exactly `world_size` entries; otherwise every rank gets every argument whole."""
    values = list(args) + list(kwargs.values())
    return all(isinstance(v, list) and len(v) == world_size for v in values)


def dispatch_all_to_all(wg, *args, **kwargs):
    """Entry r of each argument to rank r if all are world-size lists, else all of them to every rank."""
    if splits_across_ranks(wg.world_size, args, kwargs):
        return tuple(list(a) for a in args), {k: list(v) for k, v in kwargs.items()}
    return dispatch_one_to_all(wg, *args, **kwargs)


def dispatch_dp_compute(wg, *args, **kwargs):
    """Every argument must already be a list (or tuple) with one entry per rank."""
    _check_per_rank_lists(wg, args, kwargs)
    return tuple(list(a) for a in args), {k: list(v) for k, v in kwargs.items()}




def _check_protos(wg, args, kwargs) -> None:
    n = wg.world_size
    for name, value in _named_values(args, kwargs):
        if not isinstance(value, DataProto):
            raise ValueError(f"{name} must be a DataProto (or DataProtoFuture), got {type(value).__name__}")
        if len(value) % n:
            raise ValueError(f"{name} has {len(value)} rows, not divisible by the {n} ranks")


def dispatch_dp_compute_proto(wg, *args, **kwargs):
    """Chunk every DataProto argument into `world_size` equal, ordered parts."""
    _check_protos(wg, args, kwargs)
    n = wg.world_size
    return tuple(a.chunk(n) for a in args), {k: v.chunk(n) for k, v in kwargs.items()}


def dispatch_dp_compute_proto_with_func(wg, fn, *args, **kwargs):
    """Broadcast `fn` (the first argument) and chunk the DataProto arguments after it."""
    if not callable(fn):
        raise ValueError(f"argument 0 must be a function to broadcast, got {type(fn).__name__}")
    split_args, split_kwargs = dispatch_dp_compute_proto(wg, *args, **kwargs)
    return ([fn] * wg.world_size,) + split_args, split_kwargs


# ---- collect functions: (group, outputs) -> result ---------------------------------------

def collect_list(wg, outputs: list) -> list:
    return list(outputs)


def collect_rank_zero(wg, outputs: list) -> Any:
    return outputs[0]


def collect_dp_compute_proto(wg, outputs: list) -> DataProto:
    for rank, out in enumerate(outputs):
        if not isinstance(out, DataProto):
            raise TypeError(f"a DP_COMPUTE_PROTO method must return a DataProto; rank {rank} "
                            f"returned {type(out).__name__}")
    return DataProto.concat(list(outputs))


collect_all_to_all = collect_list  # verl's name

# verl's registry: mode -> {"dispatch_fn", "collect_fn"}; register_dispatch_mode adds to it.
DISPATCH_MODE_FN_REGISTRY: dict = {
    Dispatch.ONE_TO_ALL: {"dispatch_fn": dispatch_one_to_all, "collect_fn": collect_list},
    Dispatch.ALL_TO_ALL: {"dispatch_fn": dispatch_all_to_all, "collect_fn": collect_list},
    Dispatch.RANK_ZERO: {"dispatch_fn": dispatch_rank_zero, "collect_fn": collect_rank_zero},
    Dispatch.DP_COMPUTE: {"dispatch_fn": dispatch_dp_compute, "collect_fn": collect_list},
    Dispatch.DP_COMPUTE_PROTO: {"dispatch_fn": dispatch_dp_compute_proto, "collect_fn": collect_dp_compute_proto},
    Dispatch.DP_COMPUTE_PROTO_WITH_FUNC: {"dispatch_fn": dispatch_dp_compute_proto_with_func,
                                          "collect_fn": collect_dp_compute_proto},
    Dispatch.DP_COMPUTE_METRIC: {"dispatch_fn": dispatch_dp_compute_proto, "collect_fn": collect_list},
}


def register_dispatch_mode(dispatch_mode_name: str, dispatch_fn: Callable, collect_fn: Callable):
    """Add `Dispatch.<NAME>` with these functions; usable in `@register` once this has run on the
    driver (workers need not run it). Raises ValueError if the name already has functions."""
    mode = Dispatch.register(dispatch_mode_name)
    if mode in DISPATCH_MODE_FN_REGISTRY:
        raise DispatchModeError(f"register_dispatch_mode: Dispatch.{mode.name} already exists; use update_dispatch_mode")
    DISPATCH_MODE_FN_REGISTRY[mode] = {"dispatch_fn": dispatch_fn, "collect_fn": collect_fn}
    return mode


def get_predefined_dispatch_fn(dispatch_mode) -> dict:
    """{"dispatch_fn", "collect_fn"} of a registered mode (verl's name)."""
    return DISPATCH_MODE_FN_REGISTRY[dispatch_mode]


def update_dispatch_mode(dispatch_mode, dispatch_fn: Callable, collect_fn: Callable) -> None:
    """Replace the functions of an existing mode (groups created afterwards and calls made afterwards use them)."""
    if dispatch_mode not in DISPATCH_MODE_FN_REGISTRY:
        raise DispatchModeError(f"update_dispatch_mode: {dispatch_mode!r} is not registered")
    DISPATCH_MODE_FN_REGISTRY[dispatch_mode] = {"dispatch_fn": dispatch_fn, "collect_fn": collect_fn}


PROTO_INPUT_MODES = (Dispatch.DP_COMPUTE_PROTO, Dispatch.DP_COMPUTE_PROTO_WITH_FUNC, Dispatch.DP_COMPUTE_METRIC)
AUTO_PAD_MODES = (Dispatch.DP_COMPUTE_PROTO, Dispatch.DP_COMPUTE_PROTO_WITH_FUNC)


def resolve_dispatch_mode(dispatch_mode) -> tuple[Callable, Callable]:
    """(dispatch_fn, collect_fn) of a Dispatch member or a custom {"dispatch_fn", "collect_fn"} dict."""
    fns = dispatch_mode if isinstance(dispatch_mode, dict) else DISPATCH_MODE_FN_REGISTRY[dispatch_mode]
    return fns["dispatch_fn"], fns["collect_fn"]


def prepare_proto_args(world_size: int, args: tuple, kwargs: dict, skip_first: bool = False, pad: bool = True):
    """Resolve DataProtoFuture args (on the driver) and pad DataProto args to a multiple of `world_size`.

    Returns (args, kwargs, pad_size). Every DataProto arg must have the same number of rows,
    N; with `pad`, `pad_size = (-N) % world_size` rows are appended (`pad_dataproto_to_divisor`).
    With `skip_first` the first positional arg (the broadcast function) is left alone.
    """
    head, rest = (args[:1], args[1:]) if skip_first else ((), args)
    rest = tuple(a.get() if isinstance(a, DataProtoFuture) else a for a in rest)
    kwargs = {k: v.get() if isinstance(v, DataProtoFuture) else v for k, v in kwargs.items()}
    sizes = {}
    for name, value in _named_values(rest, kwargs):
        if not isinstance(value, DataProto):
            raise ValueError(f"{name} must be a DataProto (or DataProtoFuture), got {type(value).__name__}")
        sizes[name] = len(value)
    if len(set(sizes.values())) > 1:
        raise ValueError(f"DataProto arguments must have the same number of rows, got {sizes}")
    num_rows = next(iter(sizes.values()), 0)
    pad_size = (-num_rows) % world_size if pad else 0
    if pad_size:
        rest = tuple(pad_dataproto_to_divisor(a, world_size)[0] for a in rest)
        kwargs = {k: pad_dataproto_to_divisor(v, world_size)[0] for k, v in kwargs.items()}
    return head + rest, kwargs, pad_size


def unpad_output(output: Any, pad_size: int) -> Any:
    """Strip the `pad_size` trailing rows that `prepare_proto_args` added."""
    return unpad_dataproto(output, pad_size) if pad_size else output


# verl keeps the mesh dispatch factory in its decorator module; import it from here too.
from rlsys.single_controller.mesh import make_nd_compute_dataproto_dispatch_fn  # noqa: E402,F401

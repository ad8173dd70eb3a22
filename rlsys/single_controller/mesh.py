"""Mesh dispatch (verl's): each rank says which data-parallel slice it takes, the group chunks by that.

    class Actor(Worker):
        def __init__(self):
            super().__init__()
            # e.g. 4 ranks = 2 data-parallel x 2 tensor-parallel: ranks 0,1 -> dp 0; 2,3 -> dp 1
            dp_rank, tp_rank = divmod(self.rank, 2)
            self._register_dispatch_collect_info("actor", dp_rank=dp_rank, is_collect=tp_rank == 0)

        @register(dispatch_mode=make_nd_compute_dataproto_dispatch_fn(mesh_name="actor"))
        def compute(self, data: DataProto) -> DataProto: ...

The first call asks every rank for its `dp_rank` (`_query_dispatch_info`) and caches the
list on the group; the DataProto is padded to a multiple of dp_size = max(dp_rank) + 1,
chunked into dp_size parts, and rank r gets part dp_rank[r]. The outputs of the ranks that
registered `is_collect=True` (one per dp slice) are concatenated in rank order, and the
padding is stripped. Padding is always on, as for DP_COMPUTE_PROTO.
"""

from __future__ import annotations

import functools

from rlsys.protocol import DataProto, DataProtoFuture, pad_dataproto_to_divisor
from rlsys.single_controller.decorator import PADDING_SIZE_KEY, _named_values, collect_dp_compute_proto


def _dispatch_info(wg, mesh_name: str) -> list[int]:
    if mesh_name not in wg._dispatch_info:
        dp_ranks = wg._query_dispatch_info(mesh_name)
        if sorted(set(dp_ranks)) != list(range(max(dp_ranks) + 1)):
            raise ValueError(f"mesh {mesh_name!r}: ranks registered dp_ranks {dp_ranks}; "
                             "every dp rank from 0 to the largest must have at least one worker rank")
        wg._dispatch_info[mesh_name] = list(dp_ranks)
    return wg._dispatch_info[mesh_name]


def _collect_info(wg, mesh_name: str) -> list[bool]:
    if mesh_name not in wg._collect_info:
        wg._collect_info[mesh_name] = [bool(c) for c in wg._query_collect_info(mesh_name)]
    return wg._collect_info[mesh_name]


def dispatch_nd_compute_dataproto(mesh_name: str, wg, *args, **kwargs):
    """Pad every DataProto argument to a multiple of dp_size, chunk it, give rank r chunk dp_rank[r]."""
    dp_ranks = _dispatch_info(wg, mesh_name)
    dp_size = max(dp_ranks) + 1
    args = tuple(a.get() if isinstance(a, DataProtoFuture) else a for a in args)
    kwargs = {k: v.get() if isinstance(v, DataProtoFuture) else v for k, v in kwargs.items()}
    sizes = set()
    for name, value in _named_values(args, kwargs):
        if not isinstance(value, DataProto):
            raise ValueError(f"{name} must be a DataProto (mesh {mesh_name!r}), got {type(value).__name__}")
        sizes.add(len(value))
    if len(sizes) > 1:
        raise ValueError(f"DataProto arguments must have the same number of rows, got {sorted(sizes)}")

    def per_rank(data: DataProto) -> list:
        chunks = pad_dataproto_to_divisor(data, dp_size)[0].chunk(dp_size)
        return [chunks[dp_ranks[r]] for r in range(wg.world_size)]

    pad_size = (-next(iter(sizes), 0)) % dp_size
    return tuple(per_rank(a) for a in args), {**{k: per_rank(v) for k, v in kwargs.items()}, PADDING_SIZE_KEY: pad_size}


def collect_nd_compute_dataproto(mesh_name: str, wg, outputs: list) -> DataProto:
    """Concatenate, in rank order, the outputs of the ranks that registered is_collect=True."""
    mask = _collect_info(wg, mesh_name)
    return collect_dp_compute_proto(wg, [out for out, keep in zip(outputs, mask) if keep])


def make_nd_compute_dataproto_dispatch_fn(mesh_name: str) -> dict:
    """The `dispatch_mode` dict for `@register`: mesh dispatch over the mesh called `mesh_name`."""
    return {"dispatch_fn": functools.partial(dispatch_nd_compute_dataproto, mesh_name),
            "collect_fn": functools.partial(collect_nd_compute_dataproto, mesh_name)}

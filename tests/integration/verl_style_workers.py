"""Worker classes written the way a verl user writes them (only the imports differ), for
test_verl_compat.py. A module, so Ray worker processes import it (and its dispatch mode)."""

from __future__ import annotations

import os

import torch

from rlsys.protocol import DataProto
from rlsys.single_controller import (
    Dispatch, Worker, make_nd_compute_dataproto_dispatch_fn, register, register_dispatch_mode,
)


def _dispatch_rank_times(wg, x):
    """Rank r gets x * r."""
    return ([x * r for r in range(wg.world_size)],), {}


def _collect_sum(wg, outputs):
    return sum(outputs)


if "SUM_OF_RANK_MULTIPLES" not in Dispatch:  # registered at import, on the driver and in each worker
    register_dispatch_mode("SUM_OF_RANK_MULTIPLES", _dispatch_rank_times, _collect_sum)


class MetricsWorker(Worker):
    """Returns its rows doubled, with per-rank metrics in meta_info (as verl actors do)."""

    @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO)
    def update(self, data: DataProto) -> DataProto:
        out = DataProto.from_dict({"y": data.batch["x"] * 2})
        out.meta_info = {"metrics": {"loss": float(self.rank), "rows": len(data)}, "step": data.meta_info["step"]}
        return out

    @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO)
    def update_conflicting(self, data: DataProto) -> DataProto:
        return DataProto.from_dict({"y": data.batch["x"]}, meta_info={"who": self.rank})

    @register(dispatch_mode=Dispatch.ALL_TO_ALL)
    def scale(self, x, factor=1):
        return (x, factor, self.rank)

    @register(dispatch_mode=Dispatch.SUM_OF_RANK_MULTIPLES)
    def echo_value(self, x):
        return x

    def getenv(self, key):
        return os.environ.get(key)

    def pid(self):
        return os.getpid()


class MeshWorker(Worker):
    """4 ranks as 2 data-parallel x 2 tensor-parallel: dp = rank // 2; tp rank 0 returns the output."""

    def __init__(self):
        super().__init__()
        dp_rank, tp_rank = divmod(self.rank, 2)
        self._register_dispatch_collect_info("actor", dp_rank=dp_rank, is_collect=tp_rank == 0)

    @register(dispatch_mode=make_nd_compute_dataproto_dispatch_fn(mesh_name="actor"))
    def compute(self, data: DataProto) -> DataProto:
        n = len(data)
        return DataProto.from_dict({"x": data.batch["x"], "rank": torch.full((n,), self.rank)})


def tag_with_rank(worker, data: DataProto) -> DataProto:
    """For execute_with_func_generator: runs in the worker, gets it as the first argument."""
    return DataProto.from_dict({"x": data.batch["x"], "rank": torch.full((len(data),), worker.rank)})


def add_and_report_pid(a, b):
    return a + b, os.getpid()

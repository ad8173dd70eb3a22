"""Small Worker classes for the controller tests (a module, so Ray worker processes can import them)."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter

import torch

from rlsys.protocol import DataProto
from rlsys.single_controller import Dispatch, Execute, Worker, register


def _times_ten_to_all(wg, x):
    return ([x * 10] * wg.world_size,), {}


def _sum_collect(wg, outputs):
    return sum(outputs)


class EchoWorker(Worker):
    """Returns what it was given, tagged with its rank, one method per dispatch mode."""

    def __init__(self, offset: int = 0):
        super().__init__()
        self.offset = offset
        self.calls: Counter = Counter()

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def whoami(self, tag):
        return {"rank": self.rank, "world_size": self.world_size, "local_rank": self.local_rank,
                "tag": tag, "pid": os.getpid(), "master": (os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"])}

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def env(self, key):
        return os.environ.get(key)

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def num_calls(self, method):
        return self.calls[method]

    @register(dispatch_mode=Dispatch.ALL_TO_ALL)
    def add(self, x, y=0):
        self.calls["add"] += 1
        return x + y + self.offset + self.rank

    @register(dispatch_mode=Dispatch.RANK_ZERO)
    def only_zero(self, x):
        return (self.rank, x)

    @register(dispatch_mode=Dispatch.ONE_TO_ALL, execute_mode=Execute.RANK_ZERO)
    def exec_zero(self):
        return self.rank

    @register(dispatch_mode=Dispatch.ONE_TO_ALL, blocking=False)
    def rank_async(self):
        return self.rank

    @register(dispatch_mode=Dispatch.DP_COMPUTE)
    def dp(self, x):
        return x * 2 + self.rank

    @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO)
    def tag_rows(self, data: DataProto) -> DataProto:
        """x + 1 per row, and the rank that computed the row."""
        self.calls["tag_rows"] += 1
        rank_col = torch.full((len(data),), self.rank)
        return DataProto.from_dict({"x": data.batch["x"] + 1, "rank": rank_col},
                                   {"uid": data.non_tensor_batch["uid"]})

    @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO, blocking=False)
    def tag_rows_async(self, data: DataProto) -> DataProto:
        return self.tag_rows(data)

    @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO_WITH_FUNC)
    def apply(self, fn, data: DataProto) -> DataProto:
        return DataProto.from_dict({"x": fn(data.batch["x"])})

    @register(dispatch_mode=Dispatch.DP_COMPUTE_METRIC)
    def metric(self, data: DataProto):
        return {"rows": len(data), "rank": self.rank}

    @register(dispatch_mode={"dispatch_fn": _times_ten_to_all, "collect_fn": _sum_collect})
    def custom(self, x):
        return x + self.rank

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    async def slow_async(self, x):
        await asyncio.sleep(0.01)
        return x + self.rank

    @register(dispatch_mode=Dispatch.ALL_TO_ALL)
    def fail_on(self, bad_rank):
        if self.rank == bad_rank:
            raise KeyError(f"boom on {self.rank}")
        return self.rank

    @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO, blocking=False)
    def fail_proto_async(self, data: DataProto) -> DataProto:
        if self.rank == 1:
            raise ZeroDivisionError("proto boom")
        return data

    @register(dispatch_mode=Dispatch.ALL_TO_ALL)
    def act(self, action):
        """'exit' ends the process, 'hang' sleeps past any test timeout, else returns."""
        if action == "exit":
            os._exit(1)
        if action == "hang":
            time.sleep(600)
        return self.rank

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def pid(self):
        return os.getpid()

    def unregistered_rank(self, plus=0):
        return self.rank + plus


class CounterWorker(Worker):
    def __init__(self, start: int):
        super().__init__()
        self.value = start

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def bump(self):
        self.value += 1
        return self.value

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def whoami(self):
        return {"rank": self.rank, "world_size": self.world_size}

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    async def pid(self):
        return os.getpid()


class FailingInitWorker(Worker):
    def __init__(self, bad_rank: int):
        super().__init__()
        if self.rank == bad_rank:
            raise RuntimeError(f"init failed on rank {self.rank}")

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def ping(self):
        return True

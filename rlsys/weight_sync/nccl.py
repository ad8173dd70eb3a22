"""GPU split transport: NCCL broadcast from the trainer to the vLLM workers.

Uses vLLM's own stateless helpers, present with the same signatures in 0.26 and 0.32:
`vllm.distributed.utils.StatelessProcessGroup.create(host, port, rank, world_size,
store_timeout=..., listen_socket=...)` (a TCPStore-backed group that leaves
torch.distributed's global state alone) and
`vllm.distributed.device_communicators.pynccl.PyNcclCommunicator(group, device)` with
`broadcast(tensor, src, stream)`. Rank 0 is the sender; receivers are vLLM world rank + 1.
The communicator's constructor runs a one-element all-reduce, so every rank must build it
at the same time: `connect` starts the receivers' init RPC in a thread first.

One sync = one receive RPC in flight while the sender broadcasts one flat `uint8` buffer
per bucket. Both sides pipeline (`PIPELINE_DEPTH` buckets in flight): broadcasts run on a
side stream, so the sender packs bucket k+1 while bucket k crosses, and a receiver has the
broadcast of bucket k+1 queued before it loads bucket k (the load's copy kernels overlap the
next transfer). Cross-stream order is kept with events; buffers are `record_stream`ed so
the caching allocator does not hand them out while a broadcast still uses them. NCCL has no timeout of its own: the sender records
a CUDA event after the last bucket and polls it, raising `WeightSyncPeerError` if it has
not completed within `timeout_s` (the communicator is then unusable; restart the engine).
This module imports vLLM and CUDA lazily, so it can be imported on CPU; it runs only on
CUDA machines.
"""

from __future__ import annotations

import socket
import time
from collections import deque
from contextlib import contextmanager
from typing import Iterator

import torch

from rlsys.weight_sync.buckets import BucketPlan, iter_packed_buckets
from rlsys.weight_sync.gloo import WeightSyncPeerError
from rlsys.weight_sync.sender import BroadcastWeightSender, CallReceivers, call_in_background

PIPELINE_DEPTH = 2


def broadcast_on_side_stream(group: "NcclGroup", buffer: torch.Tensor, side: torch.cuda.Stream):
    """Broadcast `buffer` on `side` after all work queued so far on the current stream.

    Returns the event recorded on `side` after the broadcast.
    """
    side.wait_stream(torch.cuda.current_stream())
    group.broadcast(buffer, src=0, stream=side)
    buffer.record_stream(side)
    done = torch.cuda.Event()
    done.record(side)
    return done


class NcclGroup:
    """A PyNccl communicator over a StatelessProcessGroup."""

    def __init__(self, comm, rank: int):
        self.comm, self.rank = comm, rank

    def broadcast(self, tensor: torch.Tensor, src: int = 0, stream=None) -> None:
        self.comm.broadcast(tensor, src=src, stream=stream or torch.cuda.current_stream())

    def close(self) -> None:
        self.comm = None


def make_nccl_group(host: str, port: int, rank: int, world_size: int, device,
                    connect_timeout_s: float, listen_socket: socket.socket | None = None) -> NcclGroup:
    """Join the group (rank 0 passes its bound `listen_socket`); blocks until all ranks join."""
    from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
    from vllm.distributed.utils import StatelessProcessGroup

    pg = StatelessProcessGroup.create(host=host, port=port, rank=rank, world_size=world_size,
                                      store_timeout=int(connect_timeout_s), listen_socket=listen_socket)
    return NcclGroup(PyNcclCommunicator(pg, device=device), rank)


def init_receiver(rank: int, device, host: str, port: int, world_size: int, timeout_s: float,
                  connect_timeout_s: float, rank_offset: int = 1) -> NcclGroup:
    """Worker side of `NcclWeightSender.connect` (called via `rlsys_init_group`)."""
    return make_nccl_group(host, port, rank, world_size, device, connect_timeout_s)


@contextmanager
def receive_buckets(worker, payload: dict, group: NcclGroup | None) -> Iterator:
    """Yield `(plan, buffer)` per bucket, each received into a fresh buffer on the worker's GPU."""
    if group is None:
        raise ValueError("nccl weight sync: rlsys_init_group('nccl', ...) was not called on this worker")
    plans = [BucketPlan.from_wire(b) for b in payload["buckets"]]
    side = torch.cuda.Stream(device=worker.device)

    def post(plan: BucketPlan):
        buffer = torch.empty(plan.nbytes, dtype=torch.uint8, device=worker.device)
        return plan, buffer, broadcast_on_side_stream(group, buffer, side)

    def buckets():
        pending = deque(post(p) for p in plans[:PIPELINE_DEPTH])
        following = iter(plans[PIPELINE_DEPTH:])
        while pending:
            plan, buffer, received = pending.popleft()
            nxt = next(following, None)
            if nxt is not None:
                pending.append(post(nxt))  # queued before this bucket's load
            torch.cuda.current_stream().wait_event(received)
            yield plan, buffer

    yield buckets()
    torch.cuda.current_stream().synchronize()


def _wait_event(event, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not event.query():
        if time.monotonic() > deadline:
            raise WeightSyncPeerError(f"{what} did not complete within {timeout_s:.0f} s "
                                      "(a receiver is dead or hung; the NCCL group is now unusable)")
        time.sleep(0.0001)  # fine-grained: this wait is on the sync's critical path


class NcclWeightSender(BroadcastWeightSender):
    """Broadcasts buckets from this process's current GPU to one vLLM engine's workers."""

    transport = "nccl"

    def __init__(self, bucket_size_mb: float = 256, verify: bool = False,
                 host: str = "127.0.0.1", timeout_s: float = 120.0, device: int | None = None,
                 connect_timeout_s: float = 300.0):
        super().__init__(bucket_size_mb, verify, host, timeout_s, connect_timeout_s)
        self.device = torch.device("cuda", torch.cuda.current_device() if device is None else device)

    def connect(self, call_receivers: CallReceivers) -> None:
        world_size = 1 + len(call_receivers("rlsys_worker_info"))
        listen = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listen.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listen.bind((self.host, 0))
        listen.listen()
        port = listen.getsockname()[1]
        init_info = {"host": self.host, "port": port, "world_size": world_size, "rank_offset": 1,
                     "timeout_s": self.timeout_s, "connect_timeout_s": self.connect_timeout_s}
        call = call_in_background(call_receivers, "rlsys_init_group", "nccl", init_info)
        self.group = make_nccl_group(self.host, port, 0, world_size, self.device,
                                     self.connect_timeout_s, listen_socket=listen)
        call.join_result(self.connect_timeout_s)

    def _transfer(self, named, plans, payload, call_receivers: CallReceivers) -> list[dict]:
        group = self.connected_group()
        call = call_in_background(call_receivers, "rlsys_receive", payload)
        with torch.cuda.device(self.device):
            side = torch.cuda.Stream(device=self.device)
            in_flight: deque = deque()
            for index, (plan, buffer) in enumerate(iter_packed_buckets(named, plans, device=self.device)):
                in_flight.append(broadcast_on_side_stream(group, buffer, side))
                del buffer  # kept alive by record_stream until its broadcast is done
                if len(in_flight) > PIPELINE_DEPTH:  # bound the packed buckets alive at once
                    _wait_event(in_flight.popleft(), self.timeout_s, f"NCCL broadcast of bucket {index}")
            if in_flight:
                _wait_event(in_flight[-1], self.timeout_s, f"NCCL broadcast of {len(plans)} buckets")
        return call.join_result(self.timeout_s)

"""CPU split transport: a stateless gloo group between the sender and the vLLM workers.

The group is built directly from a `torch.distributed.TCPStore` and a
`torch.distributed.ProcessGroupGloo(store, rank, world_size, options)`, never through
`init_process_group`: the default process group of the trainer (and vLLM's own groups in
its workers) stay untouched. Rank 0 is the sender; receiver ranks are vLLM's world rank
plus `rank_offset` (1 for one engine; a caller driving several engines through one
`call_receivers` adds engine_index * tp_size, and world size counts all their workers).

One sync = one receive RPC listing all buckets, started in a background thread, while the
sender broadcasts bucket after bucket (a flat `uint8` buffer each). After every bucket each
receiver writes its progress into the store (`progress/<rank>`).

Joining waits up to `connect_timeout_s` (receivers may take a while to start); after that,
every broadcast, and the wait for the receivers' load after the last one, is bounded by
`timeout_s`. If a receiver dies,
the sender's broadcast raises - at once when the dead peer's socket is closed, else when
the timeout expires - and `GlooWeightSender` re-raises it as `WeightSyncPeerError` naming
the bucket and every receiver rank with its last reported bucket; the dead one is behind.
"""

from __future__ import annotations

import secrets
import time
from contextlib import contextmanager
from datetime import timedelta
from typing import Iterator

import torch
import torch.distributed as dist

from rlsys.weight_sync.buckets import BucketPlan, iter_packed_buckets
from rlsys.weight_sync.sender import BroadcastWeightSender, CallReceivers, call_in_background


class WeightSyncPeerError(RuntimeError):
    """A collective with the receivers failed (peer died, hung or unreachable)."""


class GlooGroup:
    """A stateless gloo group plus its store (kept for progress keys)."""

    def __init__(self, store: dist.Store, pg: dist.ProcessGroupGloo, rank: int, world_size: int,
                 timeout_s: float):
        self.store, self.pg, self.rank, self.world_size = store, pg, rank, world_size
        self.timeout = timedelta(seconds=timeout_s)

    def broadcast(self, tensor: torch.Tensor, src: int = 0) -> None:
        opts = dist.BroadcastOptions()
        opts.rootRank, opts.rootTensor, opts.timeout = src, 0, self.timeout
        self.pg.broadcast([tensor], opts).wait()

    def progress(self) -> dict[int, int]:
        """Last bucket index each receiver rank reported (-1: none)."""
        out = {}
        for rank in range(1, self.world_size):
            key = f"progress/{rank}"
            out[rank] = int(self.store.get(key)) if self.store.check([key]) else -1
        return out

    def close(self) -> None:
        shutdown = getattr(self.pg, "shutdown", None)
        if shutdown is not None:
            shutdown()
        self.pg = None


def make_gloo_group(
    host: str, port: int, rank: int, world_size: int, timeout_s: float, group_name: str,
    store: dist.TCPStore | None = None, connect_timeout_s: float | None = None,
) -> GlooGroup:
    """Join (rank > 0) or host (rank 0, pass its `store`) the group; blocks until all join.

    `connect_timeout_s` (default: `timeout_s`) bounds the join, `timeout_s` each broadcast.
    """
    connect_timeout = timedelta(seconds=connect_timeout_s or timeout_s)
    if store is None:
        store = dist.TCPStore(host, port, world_size, is_master=False, timeout=connect_timeout)
    prefixed = dist.PrefixStore(f"rlsys_ws/{group_name}/", store)
    options = dist.ProcessGroupGloo._Options()
    options._timeout = connect_timeout
    if host in ("127.0.0.1", "localhost"):
        options._devices = [dist.ProcessGroupGloo.create_device(hostname="127.0.0.1")]
    else:  # this machine's IP toward the host: the hostname may resolve to 127.0.x.1 (docs/cluster.md)
        from rlsys.single_controller.nodes import local_ip_toward

        options._devices = [dist.ProcessGroupGloo.create_device(hostname=local_ip_toward(host))]
    pg = dist.ProcessGroupGloo(prefixed, rank, world_size, options)
    return GlooGroup(prefixed, pg, rank, world_size, timeout_s)


def init_receiver(rank: int, device, host: str, port: int, world_size: int, timeout_s: float,
                  group_name: str, connect_timeout_s: float, rank_offset: int = 1) -> GlooGroup:
    """Worker side of `GlooWeightSender.connect` (called via `rlsys_init_group`)."""
    return make_gloo_group(host, port, rank, world_size, timeout_s, group_name,
                           connect_timeout_s=connect_timeout_s)


@contextmanager
def receive_buckets(worker, payload: dict, group: GlooGroup | None) -> Iterator:
    """Yield `(plan, buffer)` per bucket, each received by broadcast from rank 0."""
    if group is None:
        raise ValueError("gloo weight sync: rlsys_init_group('gloo', ...) was not called on this worker")
    plans = [BucketPlan.from_wire(b) for b in payload["buckets"]]

    def buckets():
        for index, plan in enumerate(plans):
            buffer = torch.empty(plan.nbytes, dtype=torch.uint8)
            group.broadcast(buffer, src=0)
            group.store.set(f"progress/{group.rank}", str(index))
            yield plan, buffer

    yield buckets()


class GlooWeightSender(BroadcastWeightSender):
    """Broadcasts buckets over a stateless gloo group to one vLLM engine's workers."""

    transport = "gloo"

    def __init__(self, bucket_size_mb: float = 256, verify: bool = False,
                 host: str = "127.0.0.1", timeout_s: float = 120.0, connect_timeout_s: float = 300.0):
        super().__init__(bucket_size_mb, verify, host, timeout_s, connect_timeout_s)
        self._store: dist.TCPStore | None = None

    def connect(self, call_receivers: CallReceivers) -> None:
        """Create the group: rank 0 here, vLLM world rank + 1 in each worker."""
        num_receivers = len(call_receivers("rlsys_worker_info"))
        world_size = 1 + num_receivers
        self._store = dist.TCPStore(self.host, 0, world_size, is_master=True,
                                    timeout=timedelta(seconds=self.connect_timeout_s),
                                    wait_for_workers=False)
        init_info = {"host": self.host, "port": self._store.port, "world_size": world_size,
                     "timeout_s": self.timeout_s, "connect_timeout_s": self.connect_timeout_s,
                     "group_name": secrets.token_hex(4), "rank_offset": 1}
        call = call_in_background(call_receivers, "rlsys_init_group", "gloo", init_info)
        self.group = make_gloo_group(self.host, self._store.port, 0, world_size, self.timeout_s,
                                     init_info["group_name"], store=self._store,
                                     connect_timeout_s=self.connect_timeout_s)
        call.join_result(self.connect_timeout_s)

    def close(self, call_receivers: CallReceivers | None = None) -> None:
        super().close(call_receivers)
        self._store = None

    def _transfer(self, named, plans, payload, call_receivers: CallReceivers) -> list[dict]:
        group = self.connected_group()
        call = call_in_background(call_receivers, "rlsys_receive", payload)
        start = time.perf_counter()
        for index, (plan, buffer) in enumerate(iter_packed_buckets(named, plans, device="cpu")):
            try:
                group.broadcast(buffer, src=0)
            except RuntimeError as exc:
                raise WeightSyncPeerError(
                    f"gloo broadcast of bucket {index}/{len(plans)} failed after "
                    f"{time.perf_counter() - start:.1f} s (timeout {self.timeout_s:.0f} s); "
                    f"last bucket reported per receiver rank: {self._safe_progress()}; cause: {exc}"
                ) from exc
        return call.join_result(self.timeout_s)

    def _safe_progress(self) -> dict[int, int] | str:
        try:
            return self.group.progress()
        except Exception as exc:  # the store may be unreachable too; keep the first error
            return f"unavailable ({exc})"

"""GPU colocate transport: CUDA IPC handles of flat buckets, plus engine sleep/wake helpers.

Sender (a trainer process sharing its GPU with a vLLM worker): packs every bucket into its
slice of ONE flat `uint8` CUDA allocation (bucket starts aligned; one allocation means one
`cudaIpcOpenMemHandle` per receiver and sync instead of one per bucket, which on a 7B model
was a large share of the sync) and exports it with
`torch.multiprocessing.reductions.reduce_tensor`, which returns `(rebuild_fn, args)`; the
pair is pickled to bytes (vLLM's msgpack RPC accepts bytes, not functions). Handles are keyed by the sender GPU's UUID
(`vllm.platforms.current_platform.get_device_uuid`, NVML-based, the same in 0.26 and 0.32),
so several trainer ranks can contribute to one payload (`merge_ipc_handles`) and every vLLM
worker picks the buffers living on its own physical GPU. A worker rebuilds each buffer with
`args[6]` (the storage device index) replaced by its own device index, since the two
processes may number GPUs differently (CUDA_VISIBLE_DEVICES). The sender keeps the buffers
alive until the receive call returns, then drops them and runs `torch.cuda.ipc_collect()`.

Sleep mode (`enable_sleep_mode=True` at engine creation): between rollouts the engine
sleeps (`llm.sleep(level=1)`: weights offloaded to CPU, KV cache freed) so the trainer has
the GPU; before a sync wake only the weights (`wake_up(tags=["weights"])`), then the KV
cache (`wake_up(tags=["kv_cache"])`) before generating. Level 2 would also discard
non-parameter buffers (e.g. rotary caches), which a weight sync does not rewrite; we use 1.
On CPU, vLLM's sleep/wake_up are no-ops.
"""

from __future__ import annotations

import pickle
from contextlib import contextmanager
from typing import Callable, Iterator

import torch

from rlsys.weight_sync.buckets import BucketPlan, aligned, pack_bucket
from rlsys.weight_sync.sender import CallReceivers, WeightSender


def device_uuid(index: int) -> str:
    from vllm.platforms import current_platform

    return current_platform.get_device_uuid(index)


def bucket_offsets(plans: list[BucketPlan]) -> list[int]:
    """Start of each bucket inside the one flat buffer (aligned like tensors within buckets)."""
    offsets, end = [], 0
    for plan in plans:
        start = aligned(end)
        offsets.append(start)
        end = start + plan.nbytes
    return offsets + [end]


def export_buckets(named, plans: list[BucketPlan], device: torch.device) -> tuple[torch.Tensor, dict]:
    """Pack every bucket into one buffer on `device`; returns (buffer to keep alive, export).

    The export is `{"handle": pickled IPC handle, "offsets": bucket starts}`.
    """
    from torch.multiprocessing.reductions import reduce_tensor

    offsets = bucket_offsets(plans)
    flat = torch.empty(offsets[-1], dtype=torch.uint8, device=device)
    by_name = dict(named)
    for plan, start in zip(plans, offsets):
        pack_bucket(by_name, plan, out=flat[start : start + plan.nbytes])
    torch.cuda.synchronize(device)  # receivers read on their own streams
    return flat, {"handle": pickle.dumps(reduce_tensor(flat)), "offsets": offsets[:-1]}


def merge_ipc_handles(parts: list[dict[str, dict]]) -> dict[str, dict]:
    """Merge `{device_uuid: export}` dicts from several trainer ranks (one GPU each)."""
    merged: dict[str, dict] = {}
    for part in parts:
        for uuid, handles in part.items():
            if uuid in merged:
                raise ValueError(f"two trainer ranks exported weights from the same GPU {uuid}")
            merged[uuid] = handles
    return merged


@contextmanager
def receive_buckets(worker, payload: dict, group=None) -> Iterator:
    """Yield `(plan, buffer)` per bucket, opened from the handles of this worker's GPU."""
    uuid = device_uuid(worker.device.index)
    all_handles = payload["ipc_handles"]
    if uuid not in all_handles:
        raise ValueError(f"no CUDA IPC handles for this worker's GPU {uuid}; "
                         f"handles came from {sorted(all_handles)}")
    plans = [BucketPlan.from_wire(b) for b in payload["buckets"]]

    export = all_handles[uuid]
    rebuild, args = pickle.loads(export["handle"])
    args = list(args)
    args[6] = worker.device.index
    flat = rebuild(*args)

    def buckets():
        for plan, start in zip(plans, export["offsets"]):
            yield plan, flat[start : start + plan.nbytes]

    yield buckets()
    del flat
    torch.cuda.synchronize(worker.device)


class CudaIpcWeightSender(WeightSender):
    """Shares buckets with colocated vLLM workers through CUDA IPC.

    One trainer GPU: `CudaIpcWeightSender().sync(named, call_receivers)`. Several trainer
    ranks, one GPU each (engines spanning or spread over their GPUs): every rank calls
    `sync` with the same full tensors; `exchange(obj) -> [obj of every rank]` and `barrier()`
    (e.g. `torch.distributed.all_gather_object` / `barrier`) let each rank export its own
    copy, and only the rank given `call_receivers` (the others pass None) sends the merged
    handles; every rank keeps its buffer until the receivers are done.
    """

    transport = "cuda_ipc"

    def __init__(self, bucket_size_mb: float = 256, verify: bool = False, device: int | None = None,
                 exchange: Callable[[dict], list] | None = None, barrier: Callable[[], None] | None = None):
        super().__init__(bucket_size_mb, verify)
        self.device = torch.device("cuda", torch.cuda.current_device() if device is None else device)
        self.exchange = exchange or (lambda obj: [obj])
        self.barrier = barrier or (lambda: None)

    def _transfer(self, named, plans, payload, call_receivers: CallReceivers | None) -> list[dict]:
        flat, export = export_buckets(named, plans, self.device)
        try:
            handles = merge_ipc_handles(self.exchange({device_uuid(self.device.index): export}))
            if call_receivers is None:
                return []
            return call_receivers("rlsys_receive", dict(payload, ipc_handles=handles))
        finally:
            self.barrier()  # no rank frees its buffer while a receiver may still read it
            del flat
            torch.cuda.ipc_collect()  # free blocks the receivers released, and their ref counters


def sleep_engine(llm, level: int = 1) -> None:
    """Free the GPU for training: offload weights (level 1) and drop the KV cache."""
    llm.sleep(level=level)


def wake_weights(llm) -> None:
    """Bring back only the weights, ready to be overwritten by a sync."""
    llm.wake_up(tags=["weights"])


def wake_kv_cache(llm) -> None:
    """Reallocate the KV cache after a sync, before generating."""
    llm.wake_up(tags=["kv_cache"])

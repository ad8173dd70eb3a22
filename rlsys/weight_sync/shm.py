"""CPU colocate transport: buckets in POSIX shared memory, passed by name.

Sender: each bucket is written once into its own `multiprocessing.shared_memory`
segment (named `rlsys_ws_<pid>_<random>`); the payload carries only the segment names and
the bucket layout, so no weight bytes go through the driver or vLLM's RPC. After the single
receive call returns, the sender closes and unlinks every segment (also when the call
fails), so nothing is left in /dev/shm. If the sender process dies, Python's resource
tracker unlinks the segments it created.

Receiver: maps each segment read-only-in-effect with `torch.from_file(..., shared=False)`
(a private copy-on-write mapping of /dev/shm/<name>: no copy unless written, and a test
hook that corrupts a received tensor cannot touch the sender's bytes), builds tensor views
and loads them. The mapping is released when the last view is garbage collected, so the
receiver has nothing to close. Linux only (shared memory files live in /dev/shm).
"""

from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from multiprocessing import shared_memory
from typing import Iterator

import torch

from rlsys.weight_sync.buckets import BucketPlan, pack_bucket
from rlsys.weight_sync.sender import CallReceivers, WeightSender

SHM_DIR = "/dev/shm"
SEGMENT_PREFIX = "rlsys_ws_"


class ShmWeightSender(WeightSender):
    """Writes buckets into shared-memory segments and has the receivers map them by name."""

    transport = "shm"

    def _transfer(self, named, plans, payload, call_receivers: CallReceivers) -> list[dict]:
        by_name = dict(named)
        segments: list[shared_memory.SharedMemory] = []
        try:
            for plan in plans:
                segment = shared_memory.SharedMemory(
                    name=f"{SEGMENT_PREFIX}{os.getpid()}_{secrets.token_hex(6)}",
                    create=True,
                    size=max(plan.nbytes, 1),
                )
                segments.append(segment)
                out = torch.frombuffer(segment.buf, dtype=torch.uint8, count=plan.nbytes)
                pack_bucket(by_name, plan, out=out)
                del out  # release the buffer export, or close() refuses
            payload = dict(payload, segments=[s.name for s in segments])
            return call_receivers("rlsys_receive", payload)
        finally:
            for segment in segments:
                segment.close()
                segment.unlink()


def leaked_segments(pid: int | None = None) -> list[str]:
    """Names of rlsys segments in /dev/shm, all or those created by sender process `pid`."""
    if not os.path.isdir(SHM_DIR):
        return []
    prefix = SEGMENT_PREFIX if pid is None else f"{SEGMENT_PREFIX}{pid}_"
    return sorted(n for n in os.listdir(SHM_DIR) if n.startswith(prefix))


def map_segment(name: str, nbytes: int) -> torch.Tensor:
    """Private (copy-on-write) mapping of segment `name` as a `uint8` tensor of `nbytes`."""
    if "/" in name or not name.startswith(SEGMENT_PREFIX):
        raise ValueError(f"not an rlsys shared-memory segment name: {name!r}")
    return torch.from_file(os.path.join(SHM_DIR, name), shared=False, size=nbytes, dtype=torch.uint8)


@contextmanager
def receive_buckets(worker, payload: dict, group=None) -> Iterator[Iterator[tuple[BucketPlan, torch.Tensor]]]:
    """Yield `(plan, buffer)` for each bucket, mapped from shared memory one at a time."""
    plans = [BucketPlan.from_wire(b) for b in payload["buckets"]]
    names = payload["segments"]
    if len(names) != len(plans):
        raise ValueError(f"payload has {len(plans)} buckets but {len(names)} segment names")

    def buckets():
        for plan, name in zip(plans, names):
            yield plan, map_segment(name, plan.nbytes)

    yield buckets()

"""CPU colocate transport: buckets in POSIX shared memory, passed by name.

Sender: each bucket is written into its own `multiprocessing.shared_memory` segment
(named `rlsys_ws_<pid>_<random>`); the payload carries only the segment names and the
bucket layout, so no weight bytes go through the driver or vLLM's RPC. Segments are kept
from one sync to the next while the bucket layout stays the same (it does, for one model):
writing into fresh tmpfs pages and faulting them in on the receiver cost 4x a memcpy per
sync (0.5B shape, 2 cores), reused pages cost about one. Their names are unlinked as soon as
every receiver has mapped them (after the first sync of a layout; POSIX keeps unlinked memory
alive while mapped, and later syncs reuse the receivers' mappings), so a run that is killed,
or whose workers Ray kills at shutdown, leaves nothing in /dev/shm; only a death inside that
first sync can, and then Python's resource tracker unlinks them if it survives.

Receiver: maps each segment once with `torch.from_file(..., shared=True)` and keeps the
mapping for the next syncs (dropped when the payload names other segments, or at
`rlsys_close_groups`); builds tensor views and loads them. Nothing on this side writes to
the views except `corrupt_param_for_test`, whose damage the next sync's packing overwrites.
Linux only (shared memory files live in /dev/shm).
"""

from __future__ import annotations

import os
import secrets
import weakref
from contextlib import contextmanager
from multiprocessing import shared_memory
from typing import Iterator

import torch

from rlsys.weight_sync.buckets import BucketPlan, pack_bucket
from rlsys.weight_sync.sender import CallReceivers, WeightSender

SHM_DIR = "/dev/shm"
SEGMENT_PREFIX = "rlsys_ws_"
MAPPINGS_ATTR = "_rlsys_shm_mappings"  # on the receiving worker: {segment name: mapped tensor}


def _unlink(segment: shared_memory.SharedMemory) -> None:
    try:
        segment.unlink()  # also unregisters it from the resource tracker
    except FileNotFoundError:
        pass


def _release(segments: list[shared_memory.SharedMemory], unlinked: set[str]) -> None:
    while segments:
        segment = segments.pop()
        segment.close()
        if segment.name not in unlinked:
            _unlink(segment)
    unlinked.clear()


class ShmWeightSender(WeightSender):
    """Writes buckets into shared-memory segments and has the receivers map them by name."""

    transport = "shm"

    def __init__(self, bucket_size_mb: float = 256, verify: bool = False):
        super().__init__(bucket_size_mb, verify)
        self._segments: list[shared_memory.SharedMemory] = []
        self._sizes: list[int] = []
        self._unlinked: set[str] = set()  # names already removed from /dev/shm (receivers hold mappings)
        weakref.finalize(self, _release, self._segments, self._unlinked)

    def segment_names(self) -> list[str]:
        return [s.name for s in self._segments]

    def _segments_for(self, plans) -> list[shared_memory.SharedMemory]:
        sizes = [max(plan.nbytes, 1) for plan in plans]
        if sizes != self._sizes:  # first sync, or another model / bucket size
            _release(self._segments, self._unlinked)
            self._sizes = []
            for size in sizes:
                self._segments.append(shared_memory.SharedMemory(
                    name=f"{SEGMENT_PREFIX}{os.getpid()}_{secrets.token_hex(6)}", create=True, size=size))
            self._sizes = sizes
        return self._segments

    def _transfer(self, named, plans, payload, call_receivers: CallReceivers) -> list[dict]:
        by_name = dict(named)
        segments = self._segments_for(plans)
        for plan, segment in zip(plans, segments):
            out = torch.frombuffer(segment.buf, dtype=torch.uint8, count=plan.nbytes)
            pack_bucket(by_name, plan, out=out)
            del out  # release the buffer export, or close() refuses
        payload = dict(payload, segments=self.segment_names())
        reports = call_receivers("rlsys_receive", payload)
        for segment in segments:  # every receiver has mapped them now: drop the names
            if segment.name not in self._unlinked:
                _unlink(segment)
                self._unlinked.add(segment.name)
        return reports

    def close(self, call_receivers: CallReceivers | None = None) -> None:
        """Unlink the segments (receivers keep their mappings until their next sync)."""
        _release(self._segments, self._unlinked)
        self._sizes = []


def leaked_segments(pid: int | None = None) -> list[str]:
    """Names of rlsys segments in /dev/shm, all or those created by sender process `pid`."""
    if not os.path.isdir(SHM_DIR):
        return []
    prefix = SEGMENT_PREFIX if pid is None else f"{SEGMENT_PREFIX}{pid}_"
    return sorted(n for n in os.listdir(SHM_DIR) if n.startswith(prefix))


def map_segment(name: str, nbytes: int, shared: bool = False) -> torch.Tensor:
    """Mapping of segment `name` as a `uint8` tensor of `nbytes` (private copy-on-write unless `shared`)."""
    if "/" in name or not name.startswith(SEGMENT_PREFIX):
        raise ValueError(f"not an rlsys shared-memory segment name: {name!r}")
    return torch.from_file(os.path.join(SHM_DIR, name), shared=shared, size=nbytes, dtype=torch.uint8)


@contextmanager
def receive_buckets(worker, payload: dict, group=None) -> Iterator[Iterator[tuple[BucketPlan, torch.Tensor]]]:
    """Yield `(plan, buffer)` for each bucket, from mappings kept across syncs."""
    plans = [BucketPlan.from_wire(b) for b in payload["buckets"]]
    names = payload["segments"]
    if len(names) != len(plans):
        raise ValueError(f"payload has {len(plans)} buckets but {len(names)} segment names")
    mapped = worker.__dict__.setdefault(MAPPINGS_ATTR, {})
    for stale in set(mapped) - set(names):
        del mapped[stale]

    def buckets():
        for plan, name in zip(plans, names):
            if name not in mapped or mapped[name].numel() < plan.nbytes:
                if not os.path.exists(os.path.join(SHM_DIR, name)):
                    raise FileNotFoundError(f"shared-memory segment {name} is gone: the sender unlinks its segments "
                                            "once every receiver has mapped them, and this receiver has no mapping "
                                            "(dropped at rlsys_close_groups?); close the sender and sync again")
                mapped[name] = map_segment(name, plan.nbytes, shared=True)
            yield plan, mapped[name][: plan.nbytes]

    yield buckets()

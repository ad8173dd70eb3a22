"""Flatten named tensors into byte buckets, and read them back as views.

A bucket is one contiguous `uint8` buffer plus a metadata list; entry `i` says that bytes
`[offset_bytes, offset_bytes + nbytes)` of the buffer hold tensor `name` with `dtype` and
`shape` (row-major, contiguous). Offsets are aligned to `ALIGN_BYTES` so every view starts
on an address its dtype (and CUDA kernels) accept. Planning is pure (names, dtypes, shapes
in; metadata out), so every transport sends the same layout and the receiver can rebuild
views with no copy. Buckets hold whole tensors: a tensor larger than the bucket size goes
alone in a bucket of its own size; otherwise a bucket's used bytes never exceed the size.

Metadata crosses process boundaries as plain lists (`TensorMeta.to_wire`), because vLLM's
RPC layer serialises with msgpack, which refuses arbitrary Python objects by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import torch

ALIGN_BYTES = 256
MB = 1 << 20


@dataclass(frozen=True)
class TensorMeta:
    """Where one tensor lives inside a bucket buffer."""

    name: str
    dtype: str  # torch dtype name without the "torch." prefix, e.g. "float32"
    shape: tuple[int, ...]
    offset_bytes: int
    nbytes: int

    def to_wire(self) -> list:
        return [self.name, self.dtype, list(self.shape), self.offset_bytes, self.nbytes]

    @staticmethod
    def from_wire(row: Sequence) -> "TensorMeta":
        name, dtype, shape, offset_bytes, nbytes = row
        return TensorMeta(name, dtype, tuple(int(s) for s in shape), int(offset_bytes), int(nbytes))


@dataclass(frozen=True)
class BucketPlan:
    """Layout of one bucket: its buffer size and the tensors inside it, in order."""

    nbytes: int
    metas: tuple[TensorMeta, ...]

    def to_wire(self) -> dict:
        return {"nbytes": self.nbytes, "metas": [m.to_wire() for m in self.metas]}

    @staticmethod
    def from_wire(obj: dict) -> "BucketPlan":
        return BucketPlan(int(obj["nbytes"]), tuple(TensorMeta.from_wire(r) for r in obj["metas"]))


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def dtype_from_name(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype name {name!r} in weight-sync metadata")
    return dtype


def aligned(n: int) -> int:
    """`n` rounded up to a multiple of ALIGN_BYTES (where a tensor or bucket may start)."""
    return (n + ALIGN_BYTES - 1) // ALIGN_BYTES * ALIGN_BYTES


def plan_buckets(
    specs: Iterable[tuple[str, torch.dtype, Sequence[int]]], bucket_size_bytes: int
) -> list[BucketPlan]:
    """Group `(name, dtype, shape)` specs, in order, into buckets of at most `bucket_size_bytes`.

    A spec whose (aligned) size exceeds the limit is placed alone in a bucket sized for it.
    Names must be unique.
    """
    if bucket_size_bytes <= 0:
        raise ValueError(f"bucket_size_bytes must be positive, got {bucket_size_bytes}")
    plans: list[BucketPlan] = []
    current: list[TensorMeta] = []
    used = 0
    seen: set[str] = set()

    def close() -> None:
        nonlocal current, used
        if current:
            plans.append(BucketPlan(used, tuple(current)))
        current, used = [], 0

    for name, dtype, shape in specs:
        if name in seen:
            raise ValueError(f"duplicate tensor name {name!r} in weight-sync input")
        seen.add(name)
        shape = tuple(int(s) for s in shape)
        nbytes = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
        offset = aligned(used)
        if current and offset + nbytes > bucket_size_bytes:
            close()
            offset = 0
        current.append(TensorMeta(name, dtype_name(dtype), shape, offset, nbytes))
        used = offset + nbytes
        if used >= bucket_size_bytes:
            close()
    close()
    return plans


def plan_for_tensors(
    named_tensors: Sequence[tuple[str, torch.Tensor]], bucket_size_bytes: int
) -> list[BucketPlan]:
    """`plan_buckets` for concrete tensors."""
    return plan_buckets(((n, t.dtype, t.shape) for n, t in named_tensors), bucket_size_bytes)


def tensor_views(buffer: torch.Tensor, plan: BucketPlan) -> list[tuple[str, torch.Tensor]]:
    """Views (no copy) of every tensor of `plan` inside the `uint8` buffer `buffer`."""
    assert buffer.dtype == torch.uint8 and buffer.numel() >= plan.nbytes, "bucket buffer too small"
    views = []
    for meta in plan.metas:
        raw = buffer[meta.offset_bytes : meta.offset_bytes + meta.nbytes]
        views.append((meta.name, raw.view(dtype_from_name(meta.dtype)).view(meta.shape)))
    return views


def pack_bucket(
    tensors: dict[str, torch.Tensor], plan: BucketPlan, out: torch.Tensor | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Copy `tensors` (looked up by the plan's names) into a `uint8` buffer laid out as `plan`.

    Writes into `out` when given (e.g. a shared-memory or CUDA buffer), else allocates one
    on `device` (default: the first tensor's device).
    """
    if out is None:
        first = tensors[plan.metas[0].name]
        out = torch.empty(plan.nbytes, dtype=torch.uint8, device=device or first.device)
    dsts, srcs = [], []
    for name, view in tensor_views(out, plan):
        src = tensors[name]
        if src.dtype != view.dtype or tuple(src.shape) != tuple(view.shape):
            raise ValueError(
                f"tensor {name!r} changed since planning: {src.dtype}{tuple(src.shape)} "
                f"vs planned {view.dtype}{tuple(view.shape)}"
            )
        dsts.append(view)
        srcs.append(src.detach())
    if all(src.device == out.device for src in srcs):
        torch._foreach_copy_(dsts, srcs)  # one fused launch per bucket on CUDA (a loop on CPU)
    else:  # e.g. a CUDA model packed into shared memory
        for dst, src in zip(dsts, srcs):
            dst.copy_(src)
    return out


def iter_packed_buckets(
    named_tensors: Sequence[tuple[str, torch.Tensor]], plans: Sequence[BucketPlan],
    device: torch.device | str | None = None,
) -> Iterator[tuple[BucketPlan, torch.Tensor]]:
    """Yield `(plan, buffer)` for each bucket, packing lazily (one bucket alive at a time)."""
    by_name = dict(named_tensors)
    for plan in plans:
        yield plan, pack_bucket(by_name, plan, device=device)


def mb_to_bytes(bucket_size_mb: float) -> int:
    """Bucket size in bytes from a size in MiB (config unit)."""
    if bucket_size_mb <= 0:
        raise ValueError(f"weight_sync.bucket_size_mb must be positive, got {bucket_size_mb}")
    return int(bucket_size_mb * MB)

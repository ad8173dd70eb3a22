"""Bucketing of named tensors for weight sync: sizes, alignment, exact round trip; fingerprints."""

from __future__ import annotations

import pytest
import torch

from rlsys.weight_sync.buckets import (
    ALIGN_BYTES,
    BucketPlan,
    pack_bucket,
    plan_buckets,
    plan_for_tensors,
    tensor_views,
)
from rlsys.weight_sync.verify import first_mismatch, fingerprint, fingerprints


def _named_tensors() -> list[tuple[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        ("embed.weight", torch.randn(64, 32, generator=g)),                   # 8192 B
        ("layer0.norm", torch.randn(33, generator=g).to(torch.bfloat16)),     # 66 B, odd count
        ("layer0.q.weight", torch.randn(32, 32, generator=g)),                # 4096 B
        ("layer0.q.bias", torch.randn(3, generator=g).to(torch.float16)),     # 6 B
        ("layer0.count", torch.arange(5, dtype=torch.int64)),                 # 40 B
        ("layer0.flag", torch.tensor([True, False, True])),                   # 3 B
        ("head.weight", torch.randn(16, 32, generator=g, dtype=torch.float64)),  # 4096 B
    ]


def _round_trip(named, bucket_size_bytes):
    plans = plan_for_tensors(named, bucket_size_bytes)
    by_name = dict(named)
    out = {}
    for plan in plans:
        buffer = pack_bucket(by_name, plan)
        # Send bytes only: a receiver rebuilds views from (bytes, plan wire form).
        received = buffer.clone()
        for name, view in tensor_views(received, BucketPlan.from_wire(plan.to_wire())):
            out[name] = view
    return plans, out


@pytest.mark.parametrize("bucket_size_bytes", [1, 4096, 5000, 1 << 20])
def test_round_trip_is_exact(bucket_size_bytes):
    named = _named_tensors()
    _, out = _round_trip(named, bucket_size_bytes)
    assert list(out) == [n for n, _ in named]
    for name, tensor in named:
        assert out[name].dtype == tensor.dtype and out[name].shape == tensor.shape
        assert torch.equal(out[name], tensor), name


def test_bucket_sizes_respected_and_offsets_aligned():
    named = _named_tensors()
    limit = 5000
    plans = plan_for_tensors(named, limit)
    for plan in plans:
        if len(plan.metas) > 1:
            assert plan.nbytes <= limit
        end = 0
        for meta in plan.metas:
            assert meta.offset_bytes % ALIGN_BYTES == 0
            assert meta.offset_bytes >= end  # no overlap, order kept
            end = meta.offset_bytes + meta.nbytes
        assert end == plan.nbytes
    flat = [m.name for p in plans for m in p.metas]
    assert flat == [n for n, _ in named]


def test_tensor_bigger_than_bucket_goes_alone():
    named = _named_tensors()
    plans = plan_for_tensors(named, 4000)  # embed (8192 B) and q / head (4096 B) exceed it
    big = {"embed.weight", "layer0.q.weight", "head.weight"}
    for plan in plans:
        names = {m.name for m in plan.metas}
        if names & big:
            assert len(names) == 1
            assert plan.nbytes == plan.metas[0].nbytes
    groups = [[m.name for m in p.metas] for p in plans]
    assert groups == [["embed.weight"], ["layer0.norm"], ["layer0.q.weight"],
                      ["layer0.q.bias", "layer0.count", "layer0.flag"], ["head.weight"]]


def test_plan_rejects_duplicates_and_bad_size():
    with pytest.raises(ValueError, match="duplicate tensor name 'a'"):
        plan_buckets([("a", torch.float32, (2,)), ("a", torch.float32, (2,))], 1024)
    with pytest.raises(ValueError, match="bucket_size_bytes"):
        plan_buckets([("a", torch.float32, (2,))], 0)


def test_pack_rejects_tensor_changed_since_planning():
    plan = plan_buckets([("a", torch.float32, (2, 2))], 1024)[0]
    with pytest.raises(ValueError, match="'a' changed since planning"):
        pack_bucket({"a": torch.zeros(4)}, plan)


def test_fingerprint_detects_flips_and_swaps():
    t = torch.randn(1000)
    base = fingerprint(t)
    assert fingerprint(t.clone()) == base
    flipped = t.clone()
    flipped[17] = torch.nextafter(flipped[17], torch.tensor(float("inf")))  # one ulp
    assert fingerprint(flipped) != base
    swapped = t.clone()
    swapped[[3, 700]] = swapped[[700, 3]]
    assert fingerprint(swapped)[0] == base[0] and fingerprint(swapped) != base
    expected = fingerprints([("t", t)])
    assert first_mismatch(expected, [("t", t)]) is None
    assert first_mismatch(expected, [("t", flipped)]) == "t"
    with pytest.raises(ValueError, match="'u'"):
        first_mismatch(expected, [("u", t)])


def test_fingerprint_same_bytes_any_dtype_view():
    t = torch.randn(64, 3)
    assert fingerprint(t) == fingerprint(t.contiguous().view(torch.int32))
    assert fingerprint(t.t()) == fingerprint(t.t().contiguous())


def test_ipc_bucket_offsets_are_aligned_and_disjoint():
    from rlsys.weight_sync.buckets import ALIGN_BYTES, plan_buckets
    from rlsys.weight_sync.cuda_ipc import bucket_offsets

    plans = plan_buckets([(f"t{i}", torch.float32, (n,)) for i, n in enumerate([3, 70, 5, 1000, 1])], 400)
    offsets = bucket_offsets(plans)
    assert len(offsets) == len(plans) + 1
    for plan, start, nxt in zip(plans, offsets, offsets[1:]):
        assert start % ALIGN_BYTES == 0 and start + plan.nbytes <= nxt
    assert offsets[-1] == offsets[-2] + plans[-1].nbytes

"""Copy plans: record a load once, replay it as fused copies; refuse anything but pure copying.

The module below loads the way vLLM's fused layers do (q, k, v narrowed into one qkv
parameter; a plain parameter copied whole), so the recorder sees real torch calls.
"""

import pytest
import torch

from rlsys.weight_sync.buckets import pack_bucket, plan_for_tensors, tensor_views
from rlsys.weight_sync.copy_plan import record_load
from rlsys.weight_sync.cuda_ipc import storage_plans, zero_copy_signature
from rlsys.weight_sync.receiver import load_buckets
from rlsys.weight_sync.verify import fingerprints


class FusedQKV(torch.nn.Module):
    def __init__(self, how: str = "copy"):
        super().__init__()
        self.qkv = torch.nn.Parameter(torch.zeros(7, 4), requires_grad=False)  # last row: padding
        self.norm = torch.nn.Parameter(torch.zeros(4), requires_grad=False)
        self.how = how

    def load_weights(self, weights):
        for name, w in weights:
            if name == "norm":
                if self.how == "replace":
                    self.norm.data = w.clone()
                else:
                    self.norm.data.copy_(w.double() if self.how == "temporary" else w)
                    if self.how == "scale_after":
                        self.norm.data.mul_(2)
            else:
                self.qkv.data.narrow(0, 2 * "qkv".index(name), 2).copy_(w)
                self.qkv.data[6:].fill_(0)  # like vLLM's embedding loader zeroing padded rows
        return {"qkv", "norm"}


def _weights(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(shape, generator=g) for n, shape in
            (("q", (2, 4)), ("k", (2, 4)), ("v", (2, 4)), ("norm", (4,)))}


def _packed(weights):
    plans = plan_for_tensors(list(weights.items()), 1 << 20)
    return plans[0], pack_bucket(weights, plans[0])


def test_recorded_plan_replays_new_values_from_the_same_memory():
    model = FusedQKV()
    plan_meta, buffer = _packed(_weights(0))
    views = tensor_views(buffer, plan_meta)
    with record_load(model, [v for _, v in views]) as plan:
        plan.loaded = model.load_weights(views)
    assert plan.usable and len(plan.pairs) == 4 and len(plan.fills) == 3
    new = _weights(1)
    pack_bucket(new, plan_meta, out=buffer)  # same memory, new weights
    model.qkv.data[6:] = 5.0
    assert plan.replay(model)
    assert torch.equal(model.qkv, torch.cat([new["q"], new["k"], new["v"], torch.zeros(1, 4)]))
    assert torch.equal(model.norm, new["norm"])


@pytest.mark.parametrize("how, reason", [("temporary", "temporary"), ("scale_after", "in-place mul_"),
                                         ("replace", "new storage")])
def test_anything_but_pure_copying_is_refused(how, reason):
    model = FusedQKV(how)
    plan_meta, buffer = _packed(_weights(0))
    views = tensor_views(buffer, plan_meta)
    with record_load(model, [v for _, v in views]) as plan:
        model.load_weights(views)
    assert not plan.usable and reason in plan.unsafe_reason
    assert plan.pairs == [] and not plan.replay(model)


def test_replay_refuses_when_parameters_moved():
    model = FusedQKV()
    plan_meta, buffer = _packed(_weights(0))
    views = tensor_views(buffer, plan_meta)
    with record_load(model, [v for _, v in views]) as plan:
        model.load_weights(views)
    model.norm = torch.nn.Parameter(torch.zeros(4), requires_grad=False)
    assert not plan.replay(model)


def test_load_buckets_replays_keyed_buckets_and_never_corrupts_the_source():
    model, copy_plans = FusedQKV(), {}
    plan_meta, buffer = _packed(_weights(0))
    reports = []
    for seed in (0, 1, 2):
        weights = _weights(seed)
        pack_bucket(weights, plan_meta, out=buffer)
        report = load_buckets(model, None, [(plan_meta, buffer, ("export", 0))],
                              fingerprints(list(weights.items())), layerwise=False, copy_plans=copy_plans)
        reports.append(report)
        assert report["mismatch"] is None and torch.equal(model.norm, weights["norm"])
    assert [r["num_replayed"] for r in reports] == [0, 1, 1]
    before = buffer.clone()
    report = load_buckets(model, None, [(plan_meta, buffer, ("export", 0))],
                          fingerprints(list(_weights(2).items())), corrupt_param_for_test="k",
                          layerwise=False, copy_plans=copy_plans)
    assert report["mismatch"] == "k" and torch.equal(buffer, before)
    # a bucket without a reuse key is loaded, never recorded; its sync drops the stale plan
    report = load_buckets(model, None, [(plan_meta, buffer)], None, layerwise=False, copy_plans=copy_plans)
    assert report["num_replayed"] == 0 and copy_plans == {}


def test_storage_plans_lay_out_tensors_at_their_storage_offsets():
    flat = torch.arange(20, dtype=torch.float32)
    named = [("a", flat[2:8].view(2, 3)), ("b", flat[10:14]), ("c", torch.ones(3, dtype=torch.bfloat16))]
    plans, storages = storage_plans(named)
    assert [p.nbytes for p in plans] == [80, 6] and len(storages) == 2
    views = dict(tensor_views(storages[0], plans[0]) + tensor_views(storages[1], plans[1]))
    for name, t in named:
        assert torch.equal(views[name], t) and views[name].data_ptr() == t.data_ptr()


def test_zero_copy_needs_plain_contiguous_tensors_on_the_device():
    cpu = torch.device("cpu")
    t = torch.zeros(4, 4)
    assert zero_copy_signature([("w", t)], cpu) is not None
    assert zero_copy_signature([("w", t.t())], cpu) is None
    assert zero_copy_signature([("w", torch.nn.Parameter(t))], cpu) is None  # not detached
    assert zero_copy_signature([("w", t)], torch.device("meta")) is None


def test_several_keyed_buckets_replay_together_and_a_moved_parameter_is_recorded_again():
    model, copy_plans = FusedQKV(), {}
    weights = _weights(0)
    plans = plan_for_tensors(list(weights.items()), 512)  # 256-byte aligned: two per bucket
    buffers = [pack_bucket(weights, p) for p in plans]
    assert len(plans) == 2

    def sync(seed):
        new = _weights(seed)
        for plan, buffer in zip(plans, buffers):
            pack_bucket(new, plan, out=buffer)
        items = [(p, b, ("export", i)) for i, (p, b) in enumerate(zip(plans, buffers))]
        report = load_buckets(model, None, items, None, layerwise=False, copy_plans=copy_plans)
        assert torch.equal(model.qkv[:6], torch.cat([new["q"], new["k"], new["v"]]))
        assert torch.equal(model.norm, new["norm"]) and report["not_loaded"] == []
        return report["num_recorded"], report["num_replayed"], report["num_moved"]

    assert [sync(0), sync(1)] == [(2, 0, 0), (0, 2, 0)]
    model.norm = torch.nn.Parameter(torch.zeros(4), requires_grad=False)  # vLLM re-allocated it
    assert sync(2) == (2, 0, 2)
    assert sync(3) == (0, 2, 0)

"""DataProto behaviour: construction, indexing, key ops, split/concat, repeat, padding, pickling, futures.

Run: .venv/bin/python -m pytest tests/unit/test_protocol.py -q
"""

import pickle

import numpy as np
import pytest
import torch
from tensordict import TensorDict

from rlsys import DataProto, DataProtoFuture
from rlsys.protocol import DataProtoItem, pad_dataproto_to_divisor, unpad_dataproto


def make(n=10, meta=None):
    return DataProto.from_dict(
        {"ids": torch.arange(n), "x": torch.arange(n * 3, dtype=torch.float32).reshape(n, 3)},
        {"uid": [f"u{i}" for i in range(n)]},
        {"temperature": 1.0} if meta is None else meta,
    )


def assert_same(a: DataProto, b: DataProto):
    assert len(a) == len(b)
    leaves = sorted(a.batch.keys(include_nested=True, leaves_only=True), key=str)
    assert leaves == sorted(b.batch.keys(include_nested=True, leaves_only=True), key=str)
    for key in leaves:
        assert torch.equal(a.batch[key], b.batch[key]), key
    assert sorted(a.non_tensor_batch) == sorted(b.non_tensor_batch)
    for key, value in a.non_tensor_batch.items():
        assert value.tolist() == b.non_tensor_batch[key].tolist(), key
    assert a.meta_info == b.meta_info


# ---- construction --------------------------------------------------------------------------

def test_from_dict_builds_aligned_batch():
    d = make(4)
    assert len(d) == 4 and isinstance(d.batch, TensorDict) and list(d.batch.batch_size) == [4]
    assert d.non_tensor_batch["uid"].dtype == object and d.meta_info == {"temperature": 1.0}


def test_from_dict_rejects_mismatched_tensor_sizes_naming_key():
    with pytest.raises(ValueError, match=r"'b' has batch size 3, expected 4"):
        DataProto.from_dict({"a": torch.zeros(4), "b": torch.zeros(3)})
    with pytest.raises(ValueError, match=r"tensors\['s'\]"):
        DataProto.from_dict({"s": torch.tensor(1.0)})


def test_construction_rejects_non_tensor_length_naming_key_and_sizes():
    with pytest.raises(ValueError, match=r"non_tensor_batch\['uid'\] has 2 rows, but the batch has 4"):
        DataProto.from_dict({"a": torch.zeros(4)}, {"uid": ["a", "b"]})
    batch = TensorDict({"a": torch.zeros(3)}, batch_size=[3])
    with pytest.raises(ValueError, match=r"\['gt'\] has 5 rows, but the batch has 3"):
        DataProto(batch=batch, non_tensor_batch={"gt": np.empty(5, dtype=object)})


def test_from_single_dict_splits_tensors_and_non_tensors():
    d = DataProto.from_single_dict({"a": torch.ones(2), "s": np.array(["p", "q"], dtype=object), "l": [[1], [2, 3]]},
                                   meta_info={"k": 1})
    assert list(d.batch.keys()) == ["a"] and d.non_tensor_batch["s"].tolist() == ["p", "q"]
    assert d.non_tensor_batch["l"].dtype == object and d.non_tensor_batch["l"][1] == [2, 3]
    assert d.meta_info == {"k": 1}
    with pytest.raises(ValueError, match="'bad'"):
        DataProto.from_single_dict({"a": torch.ones(2), "bad": 3})


# ---- indexing ------------------------------------------------------------------------------

def test_int_index_gives_item():
    item = make()[3]
    assert isinstance(item, DataProtoItem) and int(item.batch["ids"]) == 3 and item.non_tensor_batch["uid"] == "u3"
    assert item.batch["x"].tolist() == [9.0, 10.0, 11.0] and item.meta_info == {"temperature": 1.0}
    assert make()[-1].non_tensor_batch["uid"] == "u9" and make()[torch.tensor(2)].non_tensor_batch["uid"] == "u2"
    with pytest.raises(IndexError):
        make()[10]


@pytest.mark.parametrize("index", [slice(2, 5), [2, 3, 4], np.array([2, 3, 4]), torch.tensor([2, 3, 4]),
                                   torch.arange(10).ge(2) & torch.arange(10).lt(5), np.arange(10) % 10 >= 0])
def test_row_indexing_kinds(index):
    d = make()
    sub = d[index]
    want = list(range(10)) if isinstance(index, np.ndarray) and index.dtype == bool else [2, 3, 4]
    assert isinstance(sub, DataProto) and sub.batch["ids"].tolist() == want
    assert sub.non_tensor_batch["uid"].tolist() == [f"u{i}" for i in want] and sub.meta_info == d.meta_info


def test_bad_mask_length_and_iteration():
    with pytest.raises(ValueError, match="shape"):
        make()[torch.ones(3, dtype=torch.bool)]
    assert [item.non_tensor_batch["uid"] for item in make(3)] == ["u0", "u1", "u2"]


def test_reorder_permutes_in_place():
    d = make(4)
    d.reorder(torch.tensor([3, 1, 0, 2]))
    assert d.batch["ids"].tolist() == [3, 1, 0, 2] and d.non_tensor_batch["uid"].tolist() == ["u3", "u1", "u0", "u2"]


# ---- key operations ------------------------------------------------------------------------

def test_select_keeps_named_keys_and_deepcopy_detaches():
    d = make()
    s = d.select(batch_keys=["ids"], non_tensor_batch_keys=[], meta_info_keys=["temperature"])
    assert list(s.batch.keys()) == ["ids"] and s.non_tensor_batch == {} and s.meta_info == {"temperature": 1.0}
    shared, copied = d.select(), d.select(deepcopy=True)
    d.batch["ids"][0] = 100
    assert int(shared.batch["ids"][0]) == 100 and int(copied.batch["ids"][0]) == 0
    shared.batch["new"] = torch.zeros(10)
    assert "new" not in d.batch.keys()


@pytest.mark.parametrize("kwargs, pattern", [({"batch_keys": ["nope"]}, "batch key 'nope'"),
                                             ({"non_tensor_batch_keys": ["gt"]}, "non_tensor_batch key 'gt'"),
                                             ({"meta_info_keys": ["eos"]}, "meta_info key 'eos'")])
def test_select_and_pop_name_missing_keys(kwargs, pattern):
    with pytest.raises(KeyError, match=pattern):
        make().select(**kwargs)
    with pytest.raises(KeyError, match=pattern):
        make().pop(**kwargs)


def test_pop_removes_from_self():
    d = make()
    popped = d.pop(batch_keys=["x"], non_tensor_batch_keys=["uid"], meta_info_keys=["temperature"])
    assert list(d.batch.keys()) == ["ids"] and d.non_tensor_batch == {} and d.meta_info == {}
    assert popped.batch["x"][1].tolist() == [3.0, 4.0, 5.0] and popped.non_tensor_batch["uid"][0] == "u0"
    assert popped.meta_info == {"temperature": 1.0} and len(popped) == 10


def test_union_merges_and_rejects_conflicts():
    d = make()
    popped = d.pop(batch_keys=["x"], non_tensor_batch_keys=["uid"])
    assert d.union(popped) is d
    assert_same(d, make())
    d.union(make())  # same values under the same keys are fine
    with pytest.raises(ValueError, match="batch key 'ids' exists in both"):
        d.union(DataProto.from_dict({"ids": torch.zeros(10, dtype=torch.long)}))
    with pytest.raises(ValueError, match="non_tensor_batch key 'uid'"):
        d.union(DataProto.from_dict(non_tensors={"uid": ["z"] * 10}))
    with pytest.raises(ValueError, match="meta_info key 'temperature'"):
        d.union(DataProto(meta_info={"temperature": 0.5}))
    with pytest.raises(ValueError, match=r"batch sizes differ \(10 vs 3\)"):
        d.union(make(3))


def test_union_compares_object_arrays_holding_arrays():
    def ragged(last):
        arr = np.empty(2, dtype=object)
        arr[0], arr[1] = np.arange(3), np.arange(last)
        return arr

    d = DataProto.from_dict(non_tensors={"tokens": ragged(2)})
    d.union(DataProto.from_dict(non_tensors={"tokens": ragged(2)}))
    with pytest.raises(ValueError, match="'tokens'"):
        d.union(DataProto.from_dict(non_tensors={"tokens": ragged(4)}))


def test_union_into_batchless_proto_does_not_alias_other():
    other = make(2)
    d = DataProto.from_dict(non_tensors={"gt": ["a", "b"]}).union(other)
    d.batch["extra"] = torch.ones(2)
    assert "extra" not in other.batch.keys() and d.non_tensor_batch["gt"].tolist() == ["a", "b"]


def test_rename_batch_and_non_tensor_keys():
    d = make().to("cpu").rename(["x", "uid"], ["features", "id"])
    assert set(d.batch.keys()) == {"ids", "features"} and list(d.non_tensor_batch) == ["id"]
    with pytest.raises(KeyError, match="'missing'"):
        d.rename("missing", "y")
    with pytest.raises(ValueError, match="'ids' already exists"):
        d.rename("features", "ids")


# ---- splitting, joining, repeat, padding ---------------------------------------------------

def test_chunk_concat_round_trip():
    d = make(12)
    parts = d.chunk(4)
    assert [p.batch["ids"].tolist() for p in parts[:2]] == [[0, 1, 2], [3, 4, 5]]
    assert_same(DataProto.concat(parts), d)
    with pytest.raises(ValueError, match="12 rows does not split into 5"):
        d.chunk(5)


def test_split_last_piece_smaller():
    parts = make(12).split(5)
    assert [len(p) for p in parts] == [5, 5, 2] and parts[2].non_tensor_batch["uid"].tolist() == ["u10", "u11"]
    assert_same(DataProto.concat(parts), make(12))


def test_concat_names_missing_key_and_merges_meta():
    d = make(4)
    with pytest.raises(ValueError, match="part 1 is missing batch key 'x'"):
        DataProto.concat([d[:2], d[2:4].select(batch_keys=["ids"])])
    with pytest.raises(ValueError, match="part 0 is missing non_tensor_batch key 'gt'"):
        DataProto.concat([d[:2], d[2:4].union(DataProto.from_dict(non_tensors={"gt": [1, 2]}))])
    a, b = make(2, meta={"t": 1, "shared": 0}), make(2, meta={"t": 1, "extra": 3})
    assert DataProto.concat([a, b]).meta_info == {"t": 1, "shared": 0, "extra": 3}


def test_repeat_interleaved_and_tiled():
    d = make(2)
    inter, tiled = d.repeat(3, interleave=True), d.repeat(2, interleave=False)
    assert inter.batch["ids"].tolist() == [0, 0, 0, 1, 1, 1]
    assert inter.non_tensor_batch["uid"].tolist() == ["u0", "u0", "u0", "u1", "u1", "u1"]
    assert tiled.batch["x"][:, 0].tolist() == [0.0, 3.0, 0.0, 3.0]
    assert tiled.non_tensor_batch["uid"].tolist() == ["u0", "u1", "u0", "u1"]


def test_padding_ten_rows_to_four_and_back():
    d = make(10)
    padded, pad = pad_dataproto_to_divisor(d, 4)
    assert len(padded) == 12 and pad == 2
    assert padded.batch["ids"][-2:].tolist() == [0, 1] and padded.non_tensor_batch["uid"][-2:].tolist() == ["u0", "u1"]
    assert_same(unpad_dataproto(padded, pad), d)
    same, zero = pad_dataproto_to_divisor(d, 5)
    assert zero == 0 and same is d and unpad_dataproto(same, 0) is d


def test_padding_more_rows_than_present_cycles():
    padded, pad = pad_dataproto_to_divisor(make(2), 5)
    assert pad == 3 and padded.batch["ids"].tolist() == [0, 1, 0, 1, 0]


# ---- device, pickling, disk ----------------------------------------------------------------

def test_pickle_round_trip_with_nested_keys_and_big_tensor():
    d = make()
    d.batch["big"] = torch.randn(10, 100_000)
    d.batch[("nested", "mask")] = torch.ones(10, 4, dtype=torch.bool)
    d.meta_info["arr"] = np.arange(3)
    back = pickle.loads(pickle.dumps(d))
    assert_same(back.select(meta_info_keys=["temperature"]), d.select(meta_info_keys=["temperature"]))
    assert back.meta_info["arr"].tolist() == [0, 1, 2]
    single = DataProto.from_dict({"t": torch.randn(1_000_000)})
    assert torch.equal(pickle.loads(pickle.dumps(single)).batch["t"], single.batch["t"])


def test_pickling_a_chunk_sends_only_its_rows():
    d = DataProto.from_dict({"big": torch.randn(64, 10_000)})
    whole, chunk = len(pickle.dumps(d)), len(pickle.dumps(d.chunk(8)[3]))
    assert chunk < whole / 4
    assert torch.equal(pickle.loads(pickle.dumps(d.chunk(8)[3])).batch["big"], d.batch["big"][24:32])


def test_save_and_load_from_disk(tmp_path):
    d = make()
    d.save_to_disk(tmp_path / "d.pt")
    assert_same(DataProto.load_from_disk(tmp_path / "d.pt"), d)


def test_check_consistency_after_manual_edit():
    d = make(3)
    d.non_tensor_batch["bad"] = np.zeros(2)
    with pytest.raises(ValueError, match=r"\['bad'\] has 2 rows"):
        d.check_consistency()


# ---- DataProtoFuture -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


def test_future_concat_and_chunk(ray_local):
    d = make(8)
    refs = [ray_local.put(p) for p in d.chunk(2)]
    future = DataProtoFuture.concat(refs)
    assert_same(future.get(), d)
    halves = future.chunk(2)
    assert halves[1].get().batch["ids"].tolist() == [4, 5, 6, 7]
    quarter = halves[1].chunk(2)[0].get()
    assert quarter.non_tensor_batch["uid"].tolist() == ["u4", "u5"]

import pickle

import numpy as np
import pytest
import torch

from rlsys import DataProto
from rlsys.protocol import DataProtoItem, pad_dataproto_to_divisor, unpad_dataproto


def make(n=10):
    return DataProto.from_dict(
        {"ids": torch.arange(n), "x": torch.arange(n * 3, dtype=torch.float32).reshape(n, 3)},
        {"uid": [f"u{i}" for i in range(n)]},
        {"temperature": 1.0},
    )


def test_from_dict_rejects_mismatched_batch_size_naming_key():
    with pytest.raises(ValueError, match=r"'b' has batch size 3, expected 4"):
        DataProto.from_dict({"a": torch.zeros(4), "b": torch.zeros(3)})
    with pytest.raises(ValueError, match=r"non_tensor_batch\['uid'\] has 2 rows, but the batch has 4"):
        DataProto.from_dict({"a": torch.zeros(4)}, {"uid": ["a", "b"]})


def test_from_single_dict_splits_tensors_and_non_tensors():
    d = DataProto.from_single_dict({"a": torch.ones(2), "s": np.array(["p", "q"], dtype=object)})
    assert list(d.batch.keys()) == ["a"] and list(d.non_tensor_batch["s"]) == ["p", "q"]


def test_indexing_int_slice_list_and_mask():
    d = make()
    item = d[3]
    assert isinstance(item, DataProtoItem) and int(item.batch["ids"]) == 3 and item.non_tensor_batch["uid"] == "u3"
    assert d[2:5].batch["ids"].tolist() == [2, 3, 4]
    assert list(d[[7, 1]].non_tensor_batch["uid"]) == ["u7", "u1"]
    mask = torch.zeros(10, dtype=torch.bool)
    mask[[0, 9]] = True
    assert d[mask].batch["ids"].tolist() == [0, 9]


def test_select_pop_union():
    d = make()
    assert list(d.select(batch_keys=["ids"]).batch.keys()) == ["ids"]
    with pytest.raises(KeyError, match="'nope'"):
        d.select(batch_keys=["nope"])
    popped = d.pop(batch_keys=["x"])
    assert list(d.batch.keys()) == ["ids"] and torch.equal(popped.batch["x"][1], torch.tensor([3.0, 4.0, 5.0]))
    d.union(popped)
    assert set(d.batch.keys()) == {"ids", "x"}
    other = DataProto.from_dict({"ids": torch.zeros(10, dtype=torch.long)})
    with pytest.raises(ValueError, match="'ids' exists in both with different values"):
        d.union(other)


def test_chunk_split_concat_round_trip():
    d = make(12)
    parts = d.chunk(4)
    assert [len(p) for p in parts] == [3, 3, 3, 3]
    back = DataProto.concat(parts)
    assert torch.equal(back.batch["x"], d.batch["x"]) and list(back.non_tensor_batch["uid"]) == list(d.non_tensor_batch["uid"])
    assert [len(p) for p in d.split(5)] == [5, 5, 2]
    with pytest.raises(ValueError, match="does not split into 5"):
        d.chunk(5)
    with pytest.raises(ValueError, match="missing"):
        DataProto.concat([d[:2], d[2:4].select(batch_keys=["ids"])])


def test_repeat_interleaved_and_tiled():
    d = make(2)
    assert d.repeat(3, interleave=True).batch["ids"].tolist() == [0, 0, 0, 1, 1, 1]
    assert list(d.repeat(2, interleave=False).non_tensor_batch["uid"]) == ["u0", "u1", "u0", "u1"]


def test_padding_ten_rows_to_four_and_back():
    d = make(10)
    padded, pad = pad_dataproto_to_divisor(d, 4)
    assert len(padded) == 12 and pad == 2
    assert padded.batch["ids"][-2:].tolist() == [0, 1]
    restored = unpad_dataproto(padded, pad)
    assert torch.equal(restored.batch["x"], d.batch["x"]) and len(restored) == 10


def test_pickle_and_disk_round_trip(tmp_path):
    d = make()
    d.batch["big"] = torch.randn(10, 100_000)
    back = pickle.loads(pickle.dumps(d))
    assert torch.equal(back.batch["big"], d.batch["big"]) and back.meta_info == d.meta_info
    d.save_to_disk(tmp_path / "d.pt")
    loaded = DataProto.load_from_disk(tmp_path / "d.pt")
    assert torch.equal(loaded.batch["x"], d.batch["x"]) and list(loaded.non_tensor_batch["uid"]) == list(d.non_tensor_batch["uid"])


def test_to_device_and_rename():
    d = make().to("cpu").rename("x", "features")
    assert "features" in d.batch.keys() and "x" not in d.batch.keys()

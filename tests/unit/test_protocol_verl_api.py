"""DataProto's verl API (issue 12): concat metrics, iterators, repeats, unfolding, TensorDict
round trips, multi-dim batches, auto padding, and errors that verl code catches as AssertionError.

Run: .venv/bin/python -m pytest tests/unit/test_protocol_verl_api.py -q
"""

import numpy as np
import pytest
import torch
from tensordict import TensorDict

from rlsys.protocol import DataProto, DataProtoConfig, DataProtoError, pad_dataproto_to_divisor


def make(n=6, meta=None):
    return DataProto.from_dict({"ids": torch.arange(n), "x": torch.arange(n * 4).reshape(n, 4)},
                               {"uid": [f"u{i}" for i in range(n)]}, meta or {})


def test_concat_merges_metrics_as_dict_of_lists_and_extends_lists():
    parts = [make(2, {"metrics": {"loss": 1.0, "acc": 0.5}, "step": 1}),
             make(2, {"metrics": [{"loss": 2.0, "acc": 0.6}, {"loss": 3.0, "acc": 0.7}], "step": 1}),
             make(2, {"step": 1, "metrics": None})]
    out = DataProto.concat(parts)
    assert out.meta_info == {"metrics": {"loss": [1.0, 2.0, 3.0], "acc": [0.5, 0.6, 0.7]}, "step": 1}
    assert float(out.meta_info["metrics"]["loss"]) == 2.0
    assert out.batch["ids"].tolist() == [0, 1, 0, 1, 0, 1]


def test_concat_conflicting_meta_raises_catchable_as_assertion_and_value_error():
    a, b = make(2, {"config": "a"}), make(2, {"config": "b"})
    with pytest.raises(AssertionError, match="Conflicting values for meta_info key 'config'"):
        DataProto.concat([a, b])
    with pytest.raises(ValueError, match="part 1"):
        DataProto.concat([a, b])
    assert issubclass(DataProtoError, AssertionError) and issubclass(DataProtoError, ValueError)
    with pytest.raises(DataProtoError, match="keys"):
        DataProto.concat([make(2, {"metrics": {"a": 1}}), make(2, {"metrics": {"b": 1}})])


def test_padding_does_not_duplicate_metrics():
    padded, pad = pad_dataproto_to_divisor(make(3, {"metrics": {"loss": 1.0}}), 4)
    assert pad == 1 and padded.meta_info == {"metrics": {"loss": 1.0}}
    assert padded.batch["ids"].tolist() == [0, 1, 2, 0]


def test_make_iterator_matches_a_seeded_dataloader_and_repeats_epochs():
    data = make(8, {"temperature": 0.7})
    batches = list(data.make_iterator(mini_batch_size=4, epochs=2, seed=1, dataloader_kwargs={"shuffle": True}))
    assert len(batches) == 4 and all(len(b) == 4 and b.meta_info == {"temperature": 0.7} for b in batches)
    # verl iterates a DataLoader over the DataProto itself: same length, so the same sampler order
    from torch.utils.data import DataLoader

    loader = DataLoader(list(range(8)), batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(1))
    expected = [i for _ in range(2) for b in loader for i in b.tolist()]
    assert [i for b in batches for i in b.batch["ids"].tolist()] == expected
    assert expected[:4] != [0, 1, 2, 3]  # it did shuffle
    for b in batches:
        assert b.non_tensor_batch["uid"].tolist() == [f"u{i}" for i in b.batch["ids"].tolist()]
        assert torch.equal(b.batch["x"], data.batch["x"][b.batch["ids"]])
    assert sorted(i for b in batches[2:] for i in b.batch["ids"].tolist()) == list(range(8))
    plain = list(data.make_iterator(mini_batch_size=2, epochs=1))
    assert [b.batch["ids"].tolist() for b in plain] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    with pytest.raises(AssertionError, match="mini-batches of 3"):
        data.make_iterator(mini_batch_size=3, epochs=1)


def test_sample_level_repeat_takes_per_row_counts():
    data = make(3)
    for counts in ([2, 0, 1], (2, 0, 1), np.array([2, 0, 1]), torch.tensor([2, 0, 1])):
        out = data.sample_level_repeat(counts)
        assert out.batch["ids"].tolist() == [0, 0, 2]
        assert out.non_tensor_batch["uid"].tolist() == ["u0", "u0", "u2"]
    with pytest.raises(AssertionError, match="3 non-negative counts"):
        data.sample_level_repeat([1, 2])


def test_unfold_column_chunks_moves_column_pieces_into_rows():
    data = DataProto.from_dict({"x": torch.arange(8).reshape(2, 4), "ids": torch.tensor([10, 11])},
                               {"pair": np.array([["a", "b"], ["c", "d"]], dtype=object), "uid": np.array(["p", "q"],
                                                                                                    dtype=object)})
    out = data.unfold_column_chunks(2, split_keys=["x", "pair"])
    listed = DataProto.from_dict({"ids": torch.arange(2)}, {"pair": [["a", "b"], ["c", "d"]]})  # rows are lists
    assert listed.unfold_column_chunks(2, split_keys=["pair"]).non_tensor_batch["pair"].tolist() == \
        [["a"], ["b"], ["c"], ["d"]]
    assert out.batch["x"].tolist() == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert out.batch["ids"].tolist() == [10, 10, 11, 11]
    assert out.non_tensor_batch["pair"].tolist() == [["a"], ["b"], ["c"], ["d"]]
    assert out.non_tensor_batch["uid"].tolist() == ["p", "p", "q", "q"]
    assert data.unfold_column_chunks(2).batch["x"].tolist() == [[0, 1, 2, 3]] * 2 + [[4, 5, 6, 7]] * 2
    with pytest.raises(ValueError, match="dim 1 must divide by n_split=3"):
        data.unfold_column_chunks(3, split_keys=["x"])


def test_tensordict_round_trip_keeps_all_three_parts():
    data = make(3, {"temperature": 0.5, "tag": "run1"})
    td = data.to_tensordict()
    assert isinstance(td, TensorDict) and td.batch_size == torch.Size([3])
    assert torch.equal(td["x"], data.batch["x"]) and list(td["uid"]) == ["u0", "u1", "u2"]
    back = DataProto.from_tensordict(td)
    assert torch.equal(back.batch["ids"], data.batch["ids"]) and sorted(back.batch.keys()) == ["ids", "x"]
    assert back.non_tensor_batch["uid"].tolist() == ["u0", "u1", "u2"]
    assert back.meta_info == {"temperature": 0.5, "tag": "run1"}


def test_from_dict_num_batch_dims_checks_sizes_then_keeps_one_batch_dim():
    assert list(DataProto.from_dict({"a": torch.zeros(2, 3)}, num_batch_dims=1).batch.batch_size) == [2]
    with pytest.raises(ValueError, match=r"'b' has batch size \[2, 4\], expected \[2, 3\]"):
        DataProto.from_dict({"a": torch.zeros(2, 3), "b": torch.zeros(2, 4)}, num_batch_dims=2)
    with pytest.raises(AssertionError, match="num_batch_dims=2, but a DataProto has one batch dim"):
        DataProto.from_dict({"a": torch.zeros(2, 3, 5), "b": torch.ones(2, 3)}, num_batch_dims=2)
    with pytest.raises(AssertionError, match="num_batch_dims=2 works only without non_tensors"):
        DataProto.from_dict({"a": torch.zeros(2, 3)}, {"u": ["a", "b"]}, num_batch_dims=2)


def test_auto_padding_flag_allows_unequal_chunks():
    flagged = DataProto.from_dict({"a": torch.arange(5)}, auto_padding=True)
    assert flagged.is_padding_enabled() and not make(5).is_padding_enabled()
    assert [c.batch["a"].tolist() for c in flagged.chunk(2)] == [[0, 1, 2], [3, 4]]
    with pytest.raises(AssertionError, match="does not split into 2 equal chunks"):
        make(5).chunk(2)


def test_global_auto_padding_switch_and_padding_in_place(monkeypatch):
    assert DataProtoConfig.auto_padding is False
    DataProtoConfig.auto_padding = True
    try:
        assert make(5).is_padding_enabled() and len(make(5).chunk(3)) == 3
    finally:
        DataProtoConfig.auto_padding = False
    monkeypatch.setenv("VERL_AUTO_PADDING", "1")
    assert DataProtoConfig.auto_padding is True
    with pytest.raises(ValueError, match="must be a bool"):
        DataProtoConfig.auto_padding = "yes"
    data = make(3)
    data.padding(2)
    assert data.batch["ids"].tolist() == [0, 1, 2, 2, 2] and data.non_tensor_batch["uid"][-1] == "u2"
    data.padding(1, padding_candidate="first")
    assert data.batch["ids"].tolist() == [0, 1, 2, 2, 2, 0]


def test_select_idxs_and_slice_are_indexing():
    data = make(6)
    assert data.select_idxs([4, 1]).batch["ids"].tolist() == [4, 1]
    assert data.select_idxs(np.array([True, False] * 3)).non_tensor_batch["uid"].tolist() == ["u0", "u2", "u4"]
    assert data.slice(1, 6, 2).batch["ids"].tolist() == [1, 3, 5]

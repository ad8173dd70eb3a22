"""Tensor-parallel rollout: prompts go to engine-leading ranks only, evened out by padding."""

from types import SimpleNamespace

import torch

from rlsys.protocol import DataProto
from rlsys.rollout.worker import PAD_KEY, collect_from_engines, dispatch_to_engines


def _prompts(n: int) -> DataProto:
    return DataProto.from_dict({"prompt_ids": torch.arange(n).unsqueeze(1)})


def test_leaders_get_equal_chunks_peers_get_nothing_and_padding_is_marked():
    group = SimpleNamespace(world_size=4, engine_tp_size=2)
    (per_rank,), kwargs = dispatch_to_engines(group, _prompts(5))
    assert kwargs == {} and [len(p) for p in per_rank] == [3, 0, 3, 0]
    assert per_rank[0].batch["prompt_ids"].flatten().tolist() == [0, 1, 2]
    assert per_rank[2].batch["prompt_ids"].flatten().tolist()[:2] == [3, 4]
    assert per_rank[2].meta_info[PAD_KEY] == 1 and per_rank[0].meta_info.get(PAD_KEY, 0) == 0


def test_collect_keeps_leader_outputs_in_rank_order():
    group = SimpleNamespace(world_size=4, engine_tp_size=2)
    outputs = [_prompts(2), None, DataProto.from_dict({"prompt_ids": torch.tensor([[7], [8]])}), None]
    assert collect_from_engines(group, outputs).batch["prompt_ids"].flatten().tolist() == [0, 1, 7, 8]


def test_without_tensor_parallelism_every_rank_is_a_leader():
    (per_rank,), _ = dispatch_to_engines(SimpleNamespace(world_size=2), _prompts(4))
    assert [len(p) for p in per_rank] == [2, 2]

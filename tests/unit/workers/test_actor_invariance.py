"""Invariance: one micro-batch of 4 and four micro-batches of 1 give the same loss and gradient.

The actor role runs in-process here (no Ray needed for the math): WORLD_SIZE is unset, so it
trains on one rank without torch.distributed.
"""

from __future__ import annotations

import pytest
import torch

from rlsys.config.schema import RLConfig
from rlsys.protocol import DataProto
from rlsys.workers.actor import ActorWorker


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from rlsys.models.tiny import build_tiny_model_dir

    return str(build_tiny_model_dir(tmp_path_factory.mktemp("tiny"), seed=0))


def make_batch(seed: int = 0) -> DataProto:
    g = torch.Generator().manual_seed(seed)
    prompt_len, response_len = 4, 4
    input_ids = torch.randint(4, 60, (4, prompt_len + response_len), generator=g)
    response_mask = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]])
    attention_mask = torch.cat([torch.ones(4, prompt_len, dtype=torch.long), response_mask], dim=1)
    return DataProto.from_dict({
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "position_ids": (attention_mask.cumsum(1) - 1).clamp(min=0),
        "responses": input_ids[:, prompt_len:],
        "response_mask": response_mask,
        "old_log_probs": -torch.rand(4, response_len, generator=g) * 3,
        "advantages": torch.randn(4, response_len, generator=g),
    })


def grads_after_update(model_dir: str, micro: int, loss_agg_mode: str):
    config = RLConfig()
    config.trainer.device = "cpu"
    config.actor.ppo_mini_batch_size = 4
    config.actor.micro_batch_size_per_rank = micro
    config.actor.loss_agg_mode = loss_agg_mode
    config.actor.entropy_coeff = 0.01
    config.actor.optim.grad_clip = 1e9
    actor = ActorWorker(config, model_dir)
    actor.init_model()
    metrics = actor.update_actor(make_batch())
    return {n: p.grad.clone() for n, p in actor.model.named_parameters()}, metrics


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-sum", "seq-mean-token-mean"])
def test_micro_batch_times_accumulation_is_invariant(model_dir, mode):
    grads_1x4, m1 = grads_after_update(model_dir, micro=1, loss_agg_mode=mode)
    grads_4x1, m4 = grads_after_update(model_dir, micro=4, loss_agg_mode=mode)
    for name in grads_4x1:
        torch.testing.assert_close(grads_1x4[name], grads_4x1[name], rtol=1e-4, atol=1e-6, msg=name)
    assert m1["actor/grad_norm"] == pytest.approx(m4["actor/grad_norm"], rel=1e-4)
    assert any(g.abs().sum() > 0 for g in grads_4x1.values())  # the update really trained

"""The critic's update (in-process, one rank, FSDP2): micro-batch x accumulation invariance,
one-rank local accumulation = syncing every micro-batch, and values without a padding mask
equal to the padded rollout layout's values with one."""

from __future__ import annotations

import pytest
import torch

from rlsys.config.schema import RLConfig
from rlsys.workers.critic import CriticWorker
from tests.unit.workers.test_actor_invariance import assert_local_accumulation_equals_syncing, make_batch


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from rlsys.models.tiny import build_tiny_model_dir

    return str(build_tiny_model_dir(tmp_path_factory.mktemp("tiny"), seed=0))


def critic_batch(rows: int = 4):
    batch = make_batch(rows=rows)
    g = torch.Generator().manual_seed(5)
    shape = batch.batch["responses"].shape
    batch.batch["values"] = torch.randn(shape, generator=g) * 0.1
    batch.batch["returns"] = torch.randn(shape, generator=g)
    return batch


def make_critic(model_dir: str, **overrides) -> CriticWorker:
    config = RLConfig()
    config.trainer.device = "cpu"
    config.critic.ppo_mini_batch_size = 4
    config.critic.optim.grad_clip = 1e9
    for key, value in overrides.items():
        setattr(config.critic, key, value)
    critic = CriticWorker(config, model_dir)
    critic.init_model()
    return critic


def test_critic_micro_batches_and_token_budget_give_the_same_gradient(model_dir):
    grads, metrics = {}, {}
    for label, overrides in {"1x4": dict(micro_batch_size_per_rank=4), "4x1": dict(micro_batch_size_per_rank=1),
                             "budget": dict(micro_batch_size_per_rank=4, max_tokens_per_micro_batch=18)}.items():
        critic = make_critic(model_dir, optim=type(RLConfig().critic.optim)(lr=0.0), **overrides)
        metrics[label] = critic.update_critic(critic_batch())
        grads[label] = {n: p.grad.full_tensor().clone() for n, p in critic.model.named_parameters()
                        if p.grad is not None}
    assert grads["1x4"] and any(g.abs().sum() > 0 for g in grads["1x4"].values())
    for label in ("4x1", "budget"):
        for name, g in grads["1x4"].items():
            torch.testing.assert_close(grads[label][name], g, rtol=1e-4, atol=1e-6, msg=f"{label} {name}")
        assert metrics[label]["critic/grad_norm"] == pytest.approx(metrics["1x4"]["critic/grad_norm"], rel=1e-4)
    assert set(metrics["1x4"]) == {"critic/vf_loss", "critic/vf_clipfrac", "critic/vpred_mean", "critic/grad_norm"}


def test_critic_local_accumulation_equals_syncing_every_micro_batch(model_dir):
    """bf16 compute, two mini-batches of two micro-batches: the same master weights either way;
    the second mini-batch must see the first one's update."""
    assert_local_accumulation_equals_syncing(
        lambda: make_critic(model_dir, compute_dtype="bfloat16", micro_batch_size_per_rank=2,
                            optim=type(RLConfig().critic.optim)(lr=1e-3)),
        lambda critic: critic.update_critic(critic_batch(rows=8)))


def test_critic_values_without_padding_mask_equal_the_padded_layout(model_dir):
    critic = make_critic(model_dir)
    batch = critic_batch().batch
    with torch.no_grad():
        values, _ = critic._values(batch, 4)
        full = critic.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            position_ids=batch["position_ids"]).logits[:, 3:-1, 0].float()
    mask = batch["response_mask"].bool()
    torch.testing.assert_close(values[mask], full[mask], rtol=1e-4, atol=1e-5)
    assert (values[~mask] == 0).all()

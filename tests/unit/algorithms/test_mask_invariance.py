"""Values at masked positions never change any result (junk, large numbers, wrong signs)."""

import pytest
import torch

from rlsys.algorithms import (
    ADVANTAGE_ESTIMATORS, AdvantageConfig, agg_loss, apply_kl_penalty, compute_policy_loss, compute_value_loss,
    kl_penalty, masked_whiten,
)

MASK = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])


def with_junk(x: torch.Tensor, seed: int) -> torch.Tensor:
    """x with masked positions replaced by large random values."""
    junk = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed)) * 100
    return torch.where(MASK.bool(), x, junk)


def inputs(seed: int) -> dict:
    g = torch.Generator().manual_seed(0)
    base = {k: torch.randn(4, 4, generator=g) for k in ("rewards", "values", "logp", "old", "ref", "adv", "returns")}
    return {k: with_junk(v, seed + i) for i, (k, v) in enumerate(base.items())}


@pytest.mark.parametrize("name", sorted(ADVANTAGE_ESTIMATORS))
def test_advantage_estimators(name):
    fn = ADVANTAGE_ESTIMATORS[name]
    outs = []
    for seed in (1, 2):
        x = inputs(seed)
        outs.append(fn(token_level_rewards=x["rewards"], response_mask=MASK, values=x["values"],
                       group_index=["a", "a", "b", "b"], config=AdvantageConfig(gamma=0.9, lam=0.8)))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b)
        assert torch.all(a[MASK == 0] == 0)


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-sum", "seq-mean-token-mean"])
def test_losses(mode):
    results = []
    for seed in (1, 2):
        x = inputs(seed)
        pg = compute_policy_loss(x["old"], x["logp"], x["adv"], MASK, 0.2, 0.28, 3.0, mode)
        vf = compute_value_loss(x["logp"], x["values"], x["returns"], MASK, 0.5, mode)
        results.append([*pg, *vf, agg_loss(x["rewards"], MASK, mode)])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3", "low_var_kl", "abs"])
def test_kl_penalty(estimator):
    results = []
    for seed in (1, 2):
        x = inputs(seed)
        rewards, metrics = apply_kl_penalty(x["rewards"], x["old"], x["ref"], MASK, 0.1, estimator)
        kl = agg_loss(kl_penalty(x["logp"], x["ref"], estimator), MASK, "token-mean")
        results.append((rewards * MASK, metrics["actor/reward_kl_penalty"], kl, masked_whiten(x["adv"], MASK)))
    for a, b in zip(*results):
        torch.testing.assert_close(torch.as_tensor(a), torch.as_tensor(b))

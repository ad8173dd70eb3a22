"""Policy/value losses, aggregation and KL against hand-computed values."""

import math

import pytest
import torch

from rlsys.algorithms import (
    AdaptiveKLController, FixedKLController, agg_loss, apply_kl_penalty, compute_entropy_from_logits,
    compute_policy_loss, compute_value_loss, kl_penalty, masked_whiten, scores_to_token_level,
)


def test_agg_modes_on_a_ragged_mask():
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 100.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    assert agg_loss(loss, mask, "token-mean").item() == pytest.approx(10 / 4)
    assert agg_loss(loss, mask, "seq-mean-token-sum").item() == pytest.approx((6 + 4) / 2)
    assert agg_loss(loss, mask, "seq-mean-token-mean").item() == pytest.approx((2 + 4) / 2)
    with pytest.raises(ValueError, match="loss_agg_mode='sum'"):
        agg_loss(loss, mask, "sum")


def test_ppo_clip_higher_is_asymmetric():
    old = torch.zeros(1, 2)
    new = torch.log(torch.tensor([[1.25, 1.25]]))  # ratio 1.25
    adv = torch.ones(1, 2)
    mask = torch.ones(1, 2)
    sym, clipfrac, _, _ = compute_policy_loss(old, new, adv, mask, 0.2, 0.2)
    assert sym.item() == pytest.approx(-1.2) and clipfrac == 1.0  # clipped at 1 + 0.2
    dapo, clipfrac, _, _ = compute_policy_loss(old, new, adv, mask, 0.2, 0.28)
    assert dapo.item() == pytest.approx(-1.25) and clipfrac == 0.0  # 1.25 < 1 + 0.28


def test_dual_clip_caps_loss_for_negative_advantage():
    old = torch.zeros(1, 1)
    new = torch.log(torch.tensor([[10.0]]))  # ratio 10
    adv = -torch.ones(1, 1)
    loss, _, _, lower = compute_policy_loss(old, new, adv, torch.ones(1, 1), clip_ratio_c=3.0)
    # unclipped: -A * r = 10; PPO max(10, -A*clip(10)=1.2) = 10; dual clip min(10, 3) = 3
    assert loss.item() == pytest.approx(3.0) and lower == 1.0


def test_ppo_kl_and_masking():
    old = torch.tensor([[0.0, 0.0]])
    new = torch.tensor([[-0.1, 5.0]])  # the masked token's huge change must not matter
    mask = torch.tensor([[1.0, 0.0]])
    loss, _, ppo_kl, _ = compute_policy_loss(old, new, torch.ones(1, 2), mask)
    assert ppo_kl == pytest.approx(0.1)
    assert loss.item() == pytest.approx(-math.exp(-0.1), rel=1e-5)


def test_value_loss_clipped():
    vpreds = torch.tensor([[2.0]])
    values = torch.tensor([[0.0]])
    returns = torch.tensor([[1.0]])
    loss, clipfrac = compute_value_loss(vpreds, values, returns, torch.ones(1, 1), cliprange_value=0.5)
    # unclipped (2-1)^2 = 1; clipped V = 0.5 -> (0.5-1)^2 = 0.25; max = 1 -> 0.5 * 1
    assert loss.item() == pytest.approx(0.5) and clipfrac == 0.0
    loss, clipfrac = compute_value_loss(torch.tensor([[1.2]]), values, torch.tensor([[2.0]]), torch.ones(1, 1), 0.5)
    # unclipped (1.2-2)^2 = 0.64; clipped (0.5-2)^2 = 2.25 -> 0.5 * 2.25
    assert loss.item() == pytest.approx(1.125) and clipfrac == 1.0


def test_kl_estimators():
    logp, ref = torch.tensor([0.0]), torch.tensor([math.log(0.5)])  # d = log 2
    d = math.log(2)
    assert kl_penalty(logp, ref, "k1").item() == pytest.approx(d)
    assert kl_penalty(logp, ref, "k2").item() == pytest.approx(0.5 * d * d)
    assert kl_penalty(logp, ref, "k3").item() == pytest.approx(0.5 - 1 + d)
    assert kl_penalty(torch.tensor([0.0]), torch.tensor([30.0]), "low_var_kl").item() == 10.0
    with pytest.raises(ValueError, match="kl_penalty='k4'"):
        kl_penalty(logp, ref, "k4")


def test_in_reward_kl_penalty():
    scores = torch.tensor([[0.0, 1.0]])
    rewards, metrics = apply_kl_penalty(scores, torch.tensor([[0.2, 0.4]]), torch.zeros(1, 2),
                                        torch.ones(1, 2), kl_coef=0.5, kl_penalty="k1")
    assert torch.allclose(rewards, torch.tensor([[-0.1, 0.8]]))
    assert metrics["actor/reward_kl_penalty"] == pytest.approx(0.3)


def test_kl_controllers():
    fixed = FixedKLController(0.1)
    fixed.update(5.0, 10)
    assert fixed.value == 0.1
    adaptive = AdaptiveKLController(0.1, target_kl=0.1, horizon=100)
    adaptive.update(current_kl=1.0, n_steps=10)  # error clipped to +0.2
    assert adaptive.value == pytest.approx(0.1 * (1 + 0.2 * 10 / 100))
    adaptive.update(current_kl=0.0, n_steps=10)  # error -1 clipped to -0.2
    assert adaptive.value < 0.1 * (1 + 0.02)


def test_entropy_of_uniform_and_whiten():
    h = compute_entropy_from_logits(torch.zeros(1, 1, 4))
    assert h.item() == pytest.approx(math.log(4))
    w = masked_whiten(torch.tensor([[1.0, 3.0, 50.0]]), torch.tensor([[1.0, 1.0, 0.0]]))
    assert torch.allclose(w, torch.tensor([[-1 / math.sqrt(2), 1 / math.sqrt(2), 0.0]]), atol=1e-4)


def test_scores_to_token_level():
    out = scores_to_token_level(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([[1, 1, 0], [1, 1, 1], [0, 0, 0]]))
    assert out.tolist() == [[0.0, 1.0, 0.0], [0.0, 0.0, 2.0], [0.0, 0.0, 0.0]]

"""Advantage estimators against hand-computed examples."""

import math

import pytest
import torch

from rlsys.algorithms import (
    compute_gae, compute_grpo_outcome_advantage, compute_reinforce_plus_plus_advantage,
    compute_reinforce_plus_plus_baseline_advantage, compute_rloo_outcome_advantage, gae_raw,
    get_advantage_estimator,
)

MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])


def outcome(scores):
    """Scores on the last valid token of MASK's rows."""
    r = torch.zeros(len(scores), 3)
    for i, s in enumerate(scores):
        last = int(MASK[i % 2].sum()) - 1
        r[i, last] = s
    return r


def test_gae_gamma_lambda_one_is_return_minus_value():
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.25, 0.75]])
    mask = torch.ones(1, 3)
    # delta = r_t + V_{t+1} - V_t: [-0.25, 0.5, 0.25]; A = suffix sums: [0.5, 0.75, 0.25]
    assert torch.allclose(gae_raw(rewards, values, mask, 1.0, 1.0), torch.tensor([[0.5, 0.75, 0.25]]))
    _, returns = compute_gae(rewards, values, mask, 1.0, 1.0)
    assert torch.allclose(returns, torch.tensor([[1.0, 1.0, 1.0]]))


def test_gae_discounted_by_hand():
    rewards = torch.tensor([[1.0, 0.0, 2.0]])
    values = torch.tensor([[1.0, 2.0, 1.0]])
    # gamma=0.5, lam=0.5: delta = [1+1-1, 0+0.5-2, 2+0-1] = [1, -1.5, 1]
    # A2 = 1; A1 = -1.5 + 0.25*1 = -1.25; A0 = 1 + 0.25*(-1.25) = 0.6875
    adv = gae_raw(rewards, values, torch.ones(1, 3), 0.5, 0.5)
    assert torch.allclose(adv, torch.tensor([[0.6875, -1.25, 1.0]]))


def test_gae_skips_padding_and_whitens_valid_tokens():
    rewards = torch.tensor([[0.0, 1.0, 0.0]])
    values = torch.tensor([[0.5, 0.5, 9.0]])  # the padded value must not leak in
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    raw = gae_raw(rewards, values, mask, 1.0, 1.0)
    # delta1 = 1 + 0 - 0.5 = 0.5, delta0 = 0 + 0.5 - 0.5 = 0 -> A = [0.5, 0.5, 0]
    assert torch.allclose(raw, torch.tensor([[0.5, 0.5, 0.0]]))
    adv, _ = compute_gae(rewards, values, mask, 1.0, 1.0)
    assert adv[0, 2] == 0


def test_grpo_two_groups_of_two():
    rewards = outcome([1.0, 0.0, 3.0, 1.0])
    mask = torch.cat([MASK, MASK])
    adv, ret = compute_grpo_outcome_advantage(rewards, mask, torch.tensor([0, 0, 1, 1]))
    # group 0: mean 0.5, unbiased std sqrt(0.5); group 1: mean 2, std sqrt(2)
    s0, s1 = math.sqrt(0.5), math.sqrt(2.0)
    expected = torch.tensor([0.5 / (s0 + 1e-6), -0.5 / (s0 + 1e-6), 1 / (s1 + 1e-6), -1 / (s1 + 1e-6)])
    assert torch.allclose(adv[:, 0], expected, atol=1e-5)
    assert adv[1, 2] == 0 and adv[3, 2] == 0  # padded tokens stay zero
    assert torch.equal(adv, ret)


def test_dr_grpo_does_not_divide_by_std():
    adv, _ = compute_grpo_outcome_advantage(outcome([1.0, 0.0, 3.0, 1.0]), torch.cat([MASK, MASK]),
                                            torch.tensor([0, 0, 1, 1]), norm_by_std=False)
    assert torch.allclose(adv[:, 0], torch.tensor([0.5, -0.5, 1.0, -1.0]))


def test_grpo_single_sample_group_gets_zero():
    adv, _ = compute_grpo_outcome_advantage(outcome([1.0, 0.0]), MASK, torch.tensor([0, 1]))
    assert torch.all(adv == 0)


def test_rloo_leave_one_out():
    rewards = torch.tensor([[1.0], [0.0], [2.0]])
    adv, _ = compute_rloo_outcome_advantage(rewards, torch.ones(3, 1), torch.tensor([0, 0, 0]))
    # baselines: mean(0, 2) = 1, mean(1, 2) = 1.5, mean(1, 0) = 0.5
    assert torch.allclose(adv[:, 0], torch.tensor([0.0, -1.5, 1.5]))


def test_reinforce_plus_plus_discounted_return_then_whitened():
    rewards = torch.tensor([[1.0, 0.0, 2.0]])
    _, returns = compute_reinforce_plus_plus_advantage(rewards, torch.ones(1, 3), gamma=0.5)
    # G2 = 2, G1 = 0 + 0.5*2 = 1, G0 = 1 + 0.5*1 = 1.5
    assert torch.allclose(returns, torch.tensor([[1.5, 1.0, 2.0]]))
    adv, _ = compute_reinforce_plus_plus_advantage(rewards, torch.ones(1, 3), gamma=0.5)
    # mean 1.5, unbiased var 0.25 -> [0, -1, 1]
    assert torch.allclose(adv, torch.tensor([[0.0, -1.0, 1.0]]), atol=1e-4)


def test_reinforce_plus_plus_baseline_subtracts_group_mean_then_whitens():
    rewards = torch.tensor([[1.0], [3.0]])
    adv, _ = compute_reinforce_plus_plus_baseline_advantage(rewards, torch.ones(2, 1), torch.tensor([0, 0]))
    # s - mean = [-1, 1]; whitened (unbiased std sqrt(2)) -> [-1/sqrt2, 1/sqrt2]
    assert torch.allclose(adv[:, 0], torch.tensor([-1.0, 1.0]) / math.sqrt(2), atol=1e-4)


def test_masked_positions_never_change_outcome_advantages():
    mask = torch.cat([MASK, MASK])
    a = outcome([1.0, 0.0, 3.0, 1.0])
    b = a.clone()
    b[1, 2] = 0.0  # padded position of an MASK[1]-row: change nothing real
    for name in ("grpo", "rloo", "reinforce_plus_plus_baseline"):
        fn = get_advantage_estimator(name)
        out_a, _ = fn(token_level_rewards=a, response_mask=mask, group_index=torch.tensor([0, 0, 1, 1]))
        out_b, _ = fn(token_level_rewards=b, response_mask=mask, group_index=torch.tensor([0, 0, 1, 1]))
        assert torch.equal(out_a, out_b), name


def test_unknown_estimator_lists_valid_names():
    with pytest.raises(ValueError, match="unknown advantage estimator 'ppo2'.*grpo"):
        get_advantage_estimator("ppo2")

"""Truncated importance sampling and the rollout log-prob gap, against hand-computed numbers."""

from __future__ import annotations

import math

import pytest
import torch

from rlsys.algorithms import compute_policy_loss, rollout_logprob_gap, truncated_is_weights


def test_tis_weights_hand_computed():
    old = torch.tensor([[-1.0, -2.0, -0.5]])
    rollout = torch.tensor([[-1.5, -1.0, -0.5]])
    w = truncated_is_weights(old, rollout, cap=1.5)
    # exp(0.5) = 1.6487 -> capped at 1.5; exp(-1) = 0.3679; exp(0) = 1
    torch.testing.assert_close(w, torch.tensor([[1.5, math.exp(-1.0), 1.0]]))
    assert not w.requires_grad
    with pytest.raises(ValueError, match="tis_cap"):
        truncated_is_weights(old, rollout, cap=0.0)


def test_tis_multiplies_the_pg_term_hand_computed():
    old = torch.tensor([[-1.0, -1.0]])
    new = torch.tensor([[-1.0, -1.0]], requires_grad=True)  # ratio 1: no clipping
    adv = torch.tensor([[2.0, -1.0]])
    mask = torch.ones(1, 2)
    weights = torch.tensor([[0.5, 2.0]])
    loss, *_ = compute_policy_loss(old, new, adv, mask, token_weights=weights)
    # token losses -A * ratio = [-2, 1]; weighted [-1, 2]; token-mean 0.5
    assert float(loss.detach()) == pytest.approx(0.5)


def test_tis_at_infinite_cap_with_rollout_equal_old_is_plain_ppo():
    g = torch.Generator().manual_seed(0)
    old = -torch.rand(4, 6, generator=g) * 3
    new = (old + 0.3 * torch.randn(4, 6, generator=g)).requires_grad_()
    adv = torch.randn(4, 6, generator=g)
    mask = (torch.rand(4, 6, generator=g) > 0.3).float()
    weights = truncated_is_weights(old, old.clone(), cap=float("inf"))
    plain = compute_policy_loss(old, new, adv, mask)
    corrected = compute_policy_loss(old, new, adv, mask, token_weights=weights)
    for a, b in zip(plain, corrected):
        torch.testing.assert_close(a, b)
    g_plain = torch.autograd.grad(plain[0], new, retain_graph=True)[0]
    g_corr = torch.autograd.grad(corrected[0], new)[0]
    torch.testing.assert_close(g_plain, g_corr)


def test_gap_metrics_hand_computed():
    old = torch.tensor([[-1.0, -2.0, 0.0]])
    rollout = torch.tensor([[-1.5, -1.0, -9.0]])
    mask = torch.tensor([[1, 1, 0]])  # the third token is padding
    m = rollout_logprob_gap(old, rollout, mask)
    assert m["rollout_corr/logprob_abs_diff_mean"] == pytest.approx(0.75)
    assert m["rollout_corr/logprob_abs_diff_max"] == pytest.approx(1.0)
    # trainer mean lp -1.5, rollout mean lp -1.25: ppl ratio exp(1.5) / exp(1.25)
    assert m["rollout_corr/ppl_ratio"] == pytest.approx(math.exp(0.25))

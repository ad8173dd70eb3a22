"""Clipped value loss against hand numbers."""

import pytest
import torch

from rlsys.algorithms import compute_value_loss

# tokens (V_old, V, R) with clip c = 0.5:
#   (0, 1,   2): V_clip 0.5; max((1-2)^2, (0.5-2)^2) = max(1, 2.25) = 2.25  (clipped term larger)
#   (0, 1,   0): V_clip 0.5; max(1, 0.25) = 1
#   (1, 1.2, 1): inside the clip range; 0.04
#   last token masked with junk
VALUES = torch.tensor([[0.0, 0.0], [1.0, 50.0]])
VPREDS = torch.tensor([[1.0, 1.0], [1.2, -50.0]])
RETURNS = torch.tensor([[2.0, 0.0], [1.0, 9.0]])
MASK = torch.tensor([[1.0, 1.0], [1.0, 0.0]])


def test_value_loss_token_mean():
    loss, clipfrac = compute_value_loss(VPREDS, VALUES, RETURNS, MASK, cliprange_value=0.5)
    assert loss.item() == pytest.approx(0.5 * (2.25 + 1.0 + 0.04) / 3)
    assert float(clipfrac) == pytest.approx(1 / 3)


def test_value_loss_seq_mean_token_sum():
    loss, _ = compute_value_loss(VPREDS, VALUES, RETURNS, MASK, 0.5, loss_agg_mode="seq-mean-token-sum")
    assert loss.item() == pytest.approx(0.5 * ((2.25 + 1.0) + 0.04) / 2)


def test_value_loss_gradient_only_through_the_larger_term():
    vpreds = VPREDS.clone().requires_grad_(True)
    loss, _ = compute_value_loss(vpreds, VALUES, RETURNS, MASK, cliprange_value=0.5)
    loss.backward()
    # token 1: clipped term wins, V_clip is constant in V -> 0; token 2: 0.5 * 2 (V - R) / 3 = 1/3;
    # token 3: 0.5 * 2 * 0.2 / 3 (both terms equal; torch.maximum splits the gradient evenly)
    torch.testing.assert_close(vpreds.grad, torch.tensor([[0.0, 1 / 3], [0.2 / 3, 0.0]]))

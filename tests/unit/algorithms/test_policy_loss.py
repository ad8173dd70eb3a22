"""PPO policy loss (clip-higher, dual-clip), loss aggregation and entropy, against hand numbers."""

import math

import pytest
import torch

from rlsys.algorithms import agg_loss, compute_entropy_from_logits, compute_policy_loss

# ---- aggregation ----------------------------------------------------------------------------

LOSS = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
RAGGED = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])


@pytest.mark.parametrize("mode, expected", [
    ("token-mean", (1 + 2 + 3 + 4) / 4),            # 2.5
    ("seq-mean-token-sum", ((1 + 2 + 3) + 4) / 2),  # 5.0
    ("seq-mean-token-mean", (2.0 + 4.0) / 2),       # 3.0
])
def test_agg_modes_on_ragged_mask(mode, expected):
    assert agg_loss(LOSS, RAGGED, mode).item() == pytest.approx(expected)


def test_unknown_agg_mode_names_mode_and_valid_ones():
    with pytest.raises(ValueError, match="'seq-sum'.*token-mean"):
        agg_loss(LOSS, RAGGED, "seq-sum")


# ---- policy loss ----------------------------------------------------------------------------

def logps(ratios):
    """old_log_prob = 0, log_prob = log(ratio), so exp(logp - old) = ratio."""
    log_prob = torch.tensor(ratios, dtype=torch.float32).log()
    return torch.zeros_like(log_prob), log_prob


def test_clip_higher_asymmetry_positive_advantage():
    old, new = logps([[1.25]])
    adv, mask = torch.tensor([[1.0]]), torch.ones(1, 1)
    # symmetric eps 0.2: clip(1.25) = 1.2, loss = max(-1.25, -1.2) = -1.2, clipped
    loss, clipfrac, _, _ = compute_policy_loss(old, new, adv, mask, clip_ratio_low=0.2, clip_ratio_high=0.2)
    assert loss.item() == pytest.approx(-1.2)
    assert float(clipfrac) == 1.0
    # clip-higher eps_high 0.28: 1.25 < 1.28, loss = -1.25, not clipped
    loss, clipfrac, _, _ = compute_policy_loss(old, new, adv, mask, clip_ratio_low=0.2, clip_ratio_high=0.28)
    assert loss.item() == pytest.approx(-1.25)
    assert float(clipfrac) == 0.0


def test_clip_low_bound_negative_advantage():
    old, new = logps([[0.75]])
    adv, mask = torch.tensor([[-1.0]]), torch.ones(1, 1)
    # eps_low 0.2: clip(0.75) = 0.8, loss = max(0.75, 0.8) = 0.8
    loss, clipfrac, _, _ = compute_policy_loss(old, new, adv, mask, clip_ratio_low=0.2, clip_ratio_high=0.28)
    assert loss.item() == pytest.approx(0.8)
    assert float(clipfrac) == 1.0
    # eps_low 0.3: 0.75 lies inside [0.7, 1.28], loss = 0.75; eps_high plays no part
    loss, clipfrac, _, _ = compute_policy_loss(old, new, adv, mask, clip_ratio_low=0.3, clip_ratio_high=0.28)
    assert loss.item() == pytest.approx(0.75)
    assert float(clipfrac) == 0.0


def test_dual_clip_caps_negative_advantage_loss():
    old, new = logps([[4.0]])
    mask = torch.ones(1, 1)
    # A = -1, ratio 4: max(4, 1.2) = 4, capped at c * -A = 3
    loss, clipfrac, _, lower = compute_policy_loss(old, new, torch.tensor([[-1.0]]), mask, clip_ratio_c=3.0)
    assert loss.item() == pytest.approx(3.0)
    assert float(lower) == 1.0 and float(clipfrac) == 0.0
    # A = +1, ratio 4: no dual clip for positive advantages; max(-4, -1.2) = -1.2
    loss, _, _, lower = compute_policy_loss(old, new, torch.tensor([[1.0]]), mask, clip_ratio_c=3.0)
    assert loss.item() == pytest.approx(-1.2)
    assert float(lower) == 0.0


def test_policy_loss_batch_metrics_and_gradients():
    # tokens: (A=+1, r=1.25) -> -1.25 unclipped (eps_high .28); (A=-1, r=4) -> 3 dual-clipped;
    #         (A=+2, r=2) -> max(-4, -2.56) = -2.56 clipped; last token masked with junk.
    old, new = logps([[1.25, 4.0], [2.0, 50.0]])
    new.requires_grad_(True)
    adv = torch.tensor([[1.0, -1.0], [2.0, -7.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    loss, clipfrac, ppo_kl, lower = compute_policy_loss(old, new, adv, mask, 0.2, 0.28, 3.0, "token-mean")
    assert loss.item() == pytest.approx((-1.25 + 3.0 - 2.56) / 3)
    assert float(clipfrac) == pytest.approx(1 / 3)
    assert float(lower) == pytest.approx(1 / 3)
    assert float(ppo_kl) == pytest.approx(-math.log(1.25 * 4.0 * 2.0) / 3)
    loss.backward()
    # only the unclipped token has a gradient: d/dlogp (-A * exp(logp)) / 3 = -1.25 / 3
    torch.testing.assert_close(new.grad, torch.tensor([[-1.25 / 3, 0.0], [0.0, 0.0]]))


def test_policy_loss_agg_mode_is_used():
    old, new = logps([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    adv = torch.tensor([[-1.0, -2.0, -3.0], [-4.0, -5.0, -6.0]])  # ratio 1: loss = -A
    loss, *_ = compute_policy_loss(old, new, adv, RAGGED, loss_agg_mode="seq-mean-token-sum")
    assert loss.item() == pytest.approx(5.0)


def test_dual_clip_bound_must_exceed_one():
    old, new = logps([[1.0]])
    with pytest.raises(ValueError, match="clip_ratio_c=1.0"):
        compute_policy_loss(old, new, torch.ones(1, 1), torch.ones(1, 1), clip_ratio_c=1.0)


# ---- entropy --------------------------------------------------------------------------------

def test_entropy_from_logits():
    logits = torch.zeros(2, 3, 4)                     # uniform over 4: H = ln 4
    logits[0, 1] = torch.tensor([0.0, math.log(3.0), -1e4, -1e4])  # p = (1/4, 3/4): H = 0.562335
    logits[1, 2] = torch.tensor([1e4, 0.0, 0.0, 0.0])              # one-hot: H = 0
    h = compute_entropy_from_logits(logits)
    assert h.shape == (2, 3)
    expected = torch.full((2, 3), math.log(4.0))
    expected[0, 1] = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    expected[1, 2] = 0.0
    torch.testing.assert_close(h, expected, rtol=1e-5, atol=1e-5)

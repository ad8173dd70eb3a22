"""KL estimators, in-reward KL penalty and KL controllers against hand numbers."""

import math

import pytest
import torch

from rlsys.algorithms import (
    AdaptiveKLController, FixedKLController, apply_kl_penalty, get_kl_controller, kl_penalty,
)

# d = logp - ref = +0.5 and -0.5
LOGP = torch.tensor([[-1.0, -1.5]])
REF = torch.tensor([[-1.5, -1.0]])


@pytest.mark.parametrize("name, expected", [
    ("k1", [0.5, -0.5]),
    ("kl", [0.5, -0.5]),
    ("abs", [0.5, 0.5]),
    ("k2", [0.125, 0.125]),
    ("mse", [0.125, 0.125]),
    # exp(ref - logp) - (ref - logp) - 1: exp(-0.5) + 0.5 - 1 and exp(0.5) - 0.5 - 1
    ("k3", [0.6065306597 - 0.5, 1.6487212707 - 1.5]),
    ("low_var_kl", [0.1065306597, 0.1487212707]),
])
def test_kl_estimators(name, expected):
    torch.testing.assert_close(kl_penalty(LOGP, REF, name), torch.tensor([expected]), rtol=1e-5, atol=1e-6)


def test_low_var_kl_is_clamped_and_k3_is_not():
    logp, ref = torch.tensor([[-30.0]]), torch.tensor([[0.0]])  # ref - logp = 30
    assert kl_penalty(logp, ref, "low_var_kl").item() == 10.0
    assert kl_penalty(logp, ref, "k3").item() == pytest.approx(math.exp(30) - 31, rel=1e-5)


def test_unknown_kl_estimator():
    with pytest.raises(ValueError, match="'k4'"):
        kl_penalty(LOGP, REF, "k4")


def test_apply_kl_penalty():
    scores = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 0.0]])
    old = torch.tensor([[0.5, 0.5, 0.5], [1.0, 1.0, 7.0]])  # ref = 0, so k1 = old; last slot masked
    ref = torch.zeros(2, 3)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    rewards, metrics = apply_kl_penalty(scores, old, ref, mask, kl_coef=0.1, kl_penalty="k1")
    torch.testing.assert_close(rewards, torch.tensor([[-0.05, -0.05, 0.95], [-0.1, 1.9, 0.0]]))
    # per-sequence token means 0.5 and 1.0 -> 0.75 (a token mean over the batch would be 0.7)
    assert metrics["actor/reward_kl_penalty"] == pytest.approx(0.75)
    assert metrics["actor/reward_kl_penalty_coeff"] == pytest.approx(0.1)


def test_adaptive_controller_moves_toward_target():
    ctrl = AdaptiveKLController(init_kl_coef=0.1, target_kl=0.1, horizon=100)
    ctrl.update(current_kl=0.15, n_steps=10)  # error 0.5 clipped to 0.2: x (1 + 0.2 * 10/100) = x 1.02
    assert ctrl.value == pytest.approx(0.102)
    ctrl.update(current_kl=0.11, n_steps=10)  # error 0.1: x 1.01
    assert ctrl.value == pytest.approx(0.102 * 1.01)
    ctrl = AdaptiveKLController(init_kl_coef=0.1, target_kl=0.1, horizon=100)
    ctrl.update(current_kl=0.0, n_steps=10)   # error -1 clipped to -0.2: x 0.98
    assert ctrl.value == pytest.approx(0.098)


def test_fixed_controller_and_factory():
    ctrl = get_kl_controller("fixed", kl_coef=0.3)
    assert isinstance(ctrl, FixedKLController)
    ctrl.update(current_kl=5.0, n_steps=100)
    assert ctrl.value == 0.3
    ctrl = get_kl_controller("adaptive", kl_coef=0.2, target_kl=0.05, horizon=50)
    assert isinstance(ctrl, AdaptiveKLController) and ctrl.value == 0.2
    with pytest.raises(ValueError, match="'pid'"):
        get_kl_controller("pid", kl_coef=0.1)
    with pytest.raises(ValueError, match="target_kl"):
        get_kl_controller("adaptive", kl_coef=0.1, target_kl=0.0)

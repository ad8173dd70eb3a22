"""KL(pi || pi_ref) per-token estimators, the in-reward KL penalty, and KL-coefficient controllers.

The estimators follow Schulman's note "Approximating KL Divergence" (2020): with
d = log pi(a) - log pi_ref(a) for a sampled from pi, k1 = d is unbiased, k2 = d^2 / 2 and
k3 = exp(-d) - 1 + d are lower-variance (k3 is unbiased and never negative).
"""

from __future__ import annotations

import torch

from rlsys.algorithms.masked import masked_mean

KL_ESTIMATORS = ("k1", "kl", "abs", "k2", "mse", "k3", "low_var_kl")


def kl_penalty(log_prob: torch.Tensor, ref_log_prob: torch.Tensor, kl_penalty: str = "k1") -> torch.Tensor:
    """Per-token KL estimate, shapes (batch, response_len) -> (batch, response_len), d = logp - logp_ref:

        k1 ("kl"):   d
        abs:         |d|
        k2 ("mse"):  d^2 / 2
        k3:          exp(ref - logp) - (ref - logp) - 1  =  exp(-d) + d - 1
        low_var_kl:  k3 with (ref - logp) clamped to [-20, 20] and the result to [-10, 10] (verl/GRPO)
    """
    d = log_prob - ref_log_prob
    if kl_penalty in ("k1", "kl"):
        return d
    if kl_penalty == "abs":
        return d.abs()
    if kl_penalty in ("k2", "mse"):
        return 0.5 * d.square()
    if kl_penalty == "k3":
        return torch.exp(-d) + d - 1
    if kl_penalty == "low_var_kl":
        neg_d = (-d).clamp(-20.0, 20.0)
        return (torch.exp(neg_d) - neg_d - 1).clamp(-10.0, 10.0)
    raise ValueError(f"kl_penalty={kl_penalty!r} is unknown; valid: {KL_ESTIMATORS}")


_kl_estimate = kl_penalty  # apply_kl_penalty's argument `kl_penalty` shadows the function name


def apply_kl_penalty(token_level_scores: torch.Tensor, old_log_prob: torch.Tensor, ref_log_prob: torch.Tensor,
                     response_mask: torch.Tensor, kl_coef: float, kl_penalty: str = "k1"):
    """In-reward KL penalty (Ziegler et al. 2019; PPO-RLHF): r_t = score_t - beta * kl_t on valid tokens.

    All tensors (batch, response_len). Returns (token_level_rewards, metrics) with metrics
    `actor/reward_kl_penalty` = mean over sequences of the per-sequence token-mean KL (the value
    to feed `AdaptiveKLController.update`) and `actor/reward_kl_penalty_coeff` = beta, as floats.
    """
    valid = response_mask.bool()
    kl = _kl_estimate(old_log_prob, ref_log_prob, kl_penalty)
    kl = torch.where(valid, kl, torch.zeros_like(kl))
    rewards = token_level_scores - kl_coef * kl
    current_kl = masked_mean(kl, response_mask, dim=-1).mean()
    return rewards, {"actor/reward_kl_penalty": float(current_kl), "actor/reward_kl_penalty_coeff": float(kl_coef)}


class FixedKLController:
    """Constant KL coefficient: `.value` never changes."""

    def __init__(self, kl_coef: float):
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        """No-op, so the driver can call `update` whatever the controller type."""


class AdaptiveKLController:
    """Proportional controller of Ziegler et al. 2019 ("Fine-Tuning LMs from Human Preferences"):

        e = clip(current_kl / target_kl - 1, -0.2, 0.2);   beta <- beta * (1 + e * n_steps / horizon)
    so beta grows while the measured KL is above target and shrinks below it."""

    def __init__(self, init_kl_coef: float, target_kl: float, horizon: int):
        if target_kl <= 0:
            raise ValueError(f"algorithm.kl_ctrl.target_kl={target_kl} must be > 0 for the adaptive controller")
        if horizon <= 0:
            raise ValueError(f"algorithm.kl_ctrl.horizon={horizon} must be > 0 for the adaptive controller")
        self.value, self.target, self.horizon = float(init_kl_coef), float(target_kl), float(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        error = max(-0.2, min(0.2, current_kl / self.target - 1.0))
        self.value *= 1.0 + error * n_steps / self.horizon


def get_kl_controller(type: str, kl_coef: float, target_kl: float = 0.1, horizon: int = 10000):
    """`type` "fixed" -> FixedKLController(kl_coef); "adaptive" -> AdaptiveKLController(kl_coef, target_kl, horizon)."""
    if type == "fixed":
        return FixedKLController(kl_coef)
    if type == "adaptive":
        return AdaptiveKLController(kl_coef, target_kl, horizon)
    raise ValueError(f"algorithm.kl_ctrl.type={type!r} is unknown; valid: ['adaptive', 'fixed']")

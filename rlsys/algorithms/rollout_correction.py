"""Rollout correction: the rollout engine's log-probs as the behaviour policy.

The engine (vLLM, bf16 kernels, its own sampler) and the trainer compute slightly different
probabilities for the same weights, so samples come from pi_rollout, not from the trainer's
pi_old. Truncated importance sampling (TIS; Yao et al. 2025, "Your efficient RL framework
secretly brings you off-policy RL training") reweights each token's policy-gradient term by
the capped ratio of the two. Shapes are `(batch, response_len)`.
"""

from __future__ import annotations

import torch

from rlsys.algorithms.masked import masked_mean


def truncated_is_weights(old_log_prob: torch.Tensor, rollout_log_prob: torch.Tensor, cap: float) -> torch.Tensor:
    """w_t = min(exp(log pi_old(y_t) - log pi_rollout(y_t)), cap), detached.

    (batch, response_len) -> (batch, response_len); the log-ratio is clamped to [-20, 20]
    before exp so padding (both 0) gives 1 and outliers stay finite. cap = inf: no truncation."""
    if not cap > 0:
        raise ValueError(f"algorithm.rollout_correction.tis_cap={cap} must be positive (or null for off)")
    log_ratio = (old_log_prob - rollout_log_prob).detach().clamp(-20.0, 20.0)
    return torch.exp(log_ratio).clamp(max=cap)


def rollout_logprob_gap(old_log_prob: torch.Tensor, rollout_log_prob: torch.Tensor,
                        response_mask: torch.Tensor) -> dict[str, float]:
    """How far the trainer's log-probs are from the rollout's, over response tokens:

        logprob_abs_diff_mean = mean_t |lp_old - lp_rollout|,  logprob_abs_diff_max = max_t |...|
        ppl_ratio = exp(-mean_t lp_old) / exp(-mean_t lp_rollout)   (trainer ppl / rollout ppl)
    Means are token means over the mask."""
    mask = response_mask.bool()
    diff = (old_log_prob - rollout_log_prob).abs()
    max_diff = float(diff[mask].max()) if mask.any() else 0.0
    ppl_ratio = torch.exp(masked_mean(rollout_log_prob, mask) - masked_mean(old_log_prob, mask))
    return {
        "rollout_corr/logprob_abs_diff_mean": float(masked_mean(diff, mask)),
        "rollout_corr/logprob_abs_diff_max": max_diff,
        "rollout_corr/ppl_ratio": float(ppl_ratio),
    }

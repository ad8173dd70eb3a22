"""Policy-gradient loss (PPO clip with clip-higher and dual-clip), loss aggregation, token entropy.

Shapes are `(batch, response_len)`; `response_mask` is 1 on tokens that are trained.
"""

from __future__ import annotations

import torch

from rlsys.algorithms.masked import masked_mean, masked_sum

LOSS_AGG_MODES = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean")


def agg_loss(loss_mat: torch.Tensor, loss_mask: torch.Tensor, loss_agg_mode: str) -> torch.Tensor:
    """Reduce a (batch, response_len) loss matrix l with mask m to a scalar:

        token-mean:           sum_{i,t} m_it l_it / sum_{i,t} m_it         (DAPO; every token weighs the same)
        seq-mean-token-sum:   (1/B) sum_i sum_t m_it l_it                  (Dr. GRPO; no length normalization)
        seq-mean-token-mean:  (1/B) sum_i (sum_t m_it l_it / sum_t m_it)   (original GRPO; every sequence the same)
    B counts every row, including rows whose mask is empty (they contribute 0)."""
    if loss_agg_mode == "token-mean":
        return masked_mean(loss_mat, loss_mask)
    if loss_agg_mode == "seq-mean-token-sum":
        return masked_sum(loss_mat, loss_mask, dim=-1).mean()
    if loss_agg_mode == "seq-mean-token-mean":
        return masked_mean(loss_mat, loss_mask, dim=-1).mean()
    raise ValueError(f"loss_agg_mode={loss_agg_mode!r} is unknown; valid: {list(LOSS_AGG_MODES)}")


def compute_policy_loss(old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor,
                        response_mask: torch.Tensor, clip_ratio_low: float = 0.2, clip_ratio_high: float = 0.2,
                        clip_ratio_c: float = 3.0, loss_agg_mode: str = "token-mean",
                        token_weights: torch.Tensor | None = None):
    """PPO clipped surrogate (Schulman et al. 2017) with clip-higher (DAPO, Yu et al. 2025:
    separate eps_low / eps_high) and dual-clip (Ye et al. 2020) for negative advantages.

        ratio = exp(logp - logp_old)
        l     = max(-A * ratio, -A * clip(ratio, 1 - eps_low, 1 + eps_high))
        l     = min(l, -A * c)   where A < 0   (caps the loss of a very large ratio; c > 1)
        pg_loss = agg_loss(w * l, mask, loss_agg_mode)

    `token_weights` w (default 1), detached, e.g. the truncated-IS rollout correction
    (`rlsys.algorithms.rollout_correction`), multiplies each token's policy-gradient term.
    Inputs (batch, response_len). Returns (pg_loss, pg_clipfrac, ppo_kl, pg_clipfrac_lower):
    pg_loss is a differentiable scalar; the others are detached 0-dim tensors (use float()):
    pg_clipfrac = token share where the clipped term is the larger, ppo_kl = token-mean of
    logp_old - logp, pg_clipfrac_lower = token share where the dual clip bound is active.
    """
    if clip_ratio_c <= 1.0:
        raise ValueError(f"clip_ratio_c={clip_ratio_c} must be > 1 (dual-clip lower bound on the ratio)")
    log_ratio = (log_prob - old_log_prob).clamp(-20.0, 20.0)
    ratio = torch.exp(log_ratio)
    losses_unclipped = -advantages * ratio
    losses_clipped = -advantages * torch.clamp(ratio, 1.0 - clip_ratio_low, 1.0 + clip_ratio_high)
    clip_max = torch.maximum(losses_unclipped, losses_clipped)
    dual_bound = -advantages * clip_ratio_c
    pg_losses = torch.where(advantages < 0, torch.minimum(clip_max, dual_bound), clip_max)
    if token_weights is not None:
        pg_losses = pg_losses * token_weights.detach()
    pg_loss = agg_loss(pg_losses, response_mask, loss_agg_mode)
    with torch.no_grad():
        pg_clipfrac = masked_mean((losses_clipped > losses_unclipped).float(), response_mask)
        lower = (clip_max > dual_bound) & (advantages < 0)
        pg_clipfrac_lower = masked_mean(lower.float(), response_mask)
        ppo_kl = masked_mean(-log_ratio, response_mask)
    return pg_loss, pg_clipfrac, ppo_kl, pg_clipfrac_lower


def compute_entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Per-token entropy of softmax(z): H = logsumexp(z) - sum_v softmax(z)_v z_v.

    (batch, response_len, vocab) -> (batch, response_len)."""
    probs = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(-1)

"""Clipped value loss for the critic (PPO, as in OpenAI baselines / verl); shapes `(batch, response_len)`."""

from __future__ import annotations

import torch

from rlsys.algorithms.masked import masked_mean
from rlsys.algorithms.policy_loss import agg_loss


def compute_value_loss(vpreds: torch.Tensor, values: torch.Tensor, returns: torch.Tensor,
                       response_mask: torch.Tensor, cliprange_value: float, loss_agg_mode: str = "token-mean"):
    """Clipped value loss:

        V_clip = V_old + clip(V - V_old, -c, c)
        l      = max((V - R)^2, (V_clip - R)^2)
        vf_loss = 0.5 * agg_loss(l, mask, loss_agg_mode)
    vpreds = V (current critic), values = V_old (at rollout time), returns = R; all (batch, response_len).
    Returns (vf_loss, vf_clipfrac): vf_loss differentiable; vf_clipfrac a detached 0-dim tensor,
    the token share where the clipped term is the larger."""
    clipped = values + torch.clamp(vpreds - values, -cliprange_value, cliprange_value)
    losses_unclipped = (vpreds - returns) ** 2
    losses_clipped = (clipped - returns) ** 2
    vf_loss = 0.5 * agg_loss(torch.maximum(losses_unclipped, losses_clipped), response_mask, loss_agg_mode)
    with torch.no_grad():
        vf_clipfrac = masked_mean((losses_clipped > losses_unclipped).float(), response_mask)
    return vf_loss, vf_clipfrac

"""Placing sequence-level scores (one number per response) on response tokens."""

from __future__ import annotations

import torch


def scores_to_token_level(scores: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """(batch,) scores -> (batch, response_len) rewards: r_{i,T_i} = s_i at the last valid token T_i
    of row i (the highest index with mask 1), 0 elsewhere; rows with an empty mask get all zeros."""
    scores = torch.as_tensor(scores, device=response_mask.device)
    if scores.dim() != 1 or scores.shape[0] != response_mask.shape[0]:
        raise ValueError(f"scores has shape {tuple(scores.shape)}; expected ({response_mask.shape[0]},), "
                         f"one score per row of response_mask {tuple(response_mask.shape)}")
    dtype = scores.dtype if scores.is_floating_point() else torch.float32
    valid = response_mask.bool()
    positions = torch.arange(valid.shape[1], device=valid.device).expand_as(valid)
    last = torch.where(valid, positions, torch.full_like(positions, -1)).max(dim=-1).values
    rows = torch.nonzero(last >= 0).flatten()
    out = torch.zeros(valid.shape, dtype=dtype, device=valid.device)
    out[rows, last[rows]] = scores[rows].to(dtype)
    return out

"""Advantage estimators: pure functions of `(batch, response_len)` tensors, and their registry.

Every registry entry has one keyword signature,
    fn(*, token_level_rewards, response_mask, values=None, group_index=None, config=AdvantageConfig())
      -> (advantages, returns), both (batch, response_len), 0 at masked positions,
so the driver picks an estimator by name (`algorithm.adv_estimator`) without branching. Inputs an
estimator does not use are ignored. Outcome estimators use the sequence score
s_i = sum_t m_it * r_it and, like verl, return the advantages again as `returns`.
`group_index` holds one group id per row (e.g. the prompt uid): ints, strings, any hashable.
Groups of one sample have no baseline: GRPO and RLOO give them advantage 0 (the config check
rejects rollout.n < 2 for these estimators).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlsys.algorithms.masked import masked_sum, masked_whiten


@dataclass(frozen=True)
class AdvantageConfig:
    """Knobs the estimators read: discount `gamma`, GAE `lam`, GRPO std-normalization and its eps."""

    gamma: float = 1.0
    lam: float = 1.0
    norm_by_std: bool = True
    epsilon: float = 1e-6


# ---- token-level estimators -----------------------------------------------------------------


def gae_raw(token_level_rewards: torch.Tensor, values: torch.Tensor, response_mask: torch.Tensor,
            gamma: float, lam: float) -> torch.Tensor:
    """Un-whitened GAE (Schulman et al. 2016), right to left over valid steps:

        delta_t = r_t + gamma * V_{t+1} - V_t,     A_t = delta_t + gamma * lam * A_{t+1},
    with V and A after the last valid token taken as 0. Masked steps (padding, or tool output in
    the middle of a response) are skipped: t+1 means the next *valid* step.
    All tensors (batch, response_len); result 0 at masked positions.
    """
    valid = response_mask.bool()
    rewards = torch.where(valid, token_level_rewards, torch.zeros_like(token_level_rewards))
    values = torch.where(valid, values, torch.zeros_like(values))
    next_value = torch.zeros_like(values[:, 0])
    next_adv = torch.zeros_like(values[:, 0])
    advantages = torch.zeros_like(values)
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv = delta + gamma * lam * next_adv
        next_value = torch.where(valid[:, t], values[:, t], next_value)
        next_adv = torch.where(valid[:, t], adv, next_adv)
        advantages[:, t] = torch.where(valid[:, t], adv, torch.zeros_like(adv))
    return advantages


def compute_gae(token_level_rewards: torch.Tensor, values: torch.Tensor, response_mask: torch.Tensor,
                gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's GAE as in verl: returns = A_raw + V (the critic's target), advantages = whiten(A_raw)
    over all valid tokens of the batch. Inputs and outputs (batch, response_len)."""
    raw = gae_raw(token_level_rewards, values, response_mask, gamma, lam)
    valid = response_mask.bool()
    returns = torch.where(valid, raw + values, torch.zeros_like(raw))
    return masked_whiten(raw, response_mask), returns


def discounted_returns(token_level_rewards: torch.Tensor, response_mask: torch.Tensor,
                       gamma: float) -> torch.Tensor:
    """Return-to-go G_t = r_t + gamma * G_{t+1} over valid steps (masked steps skipped, as in
    `gae_raw`). (batch, response_len) -> (batch, response_len), 0 at masked positions."""
    valid = response_mask.bool()
    rewards = torch.where(valid, token_level_rewards, torch.zeros_like(token_level_rewards))
    running = torch.zeros_like(rewards[:, 0])
    returns = torch.zeros_like(rewards)
    for t in reversed(range(rewards.shape[1])):
        running = torch.where(valid[:, t], rewards[:, t] + gamma * running, running)
        returns[:, t] = torch.where(valid[:, t], running, torch.zeros_like(running))
    return returns


def compute_reinforce_plus_plus_advantage(token_level_rewards: torch.Tensor, response_mask: torch.Tensor,
                                          gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE++ (Hu 2025): A_t = whiten(G_t) over the batch's valid tokens, where
    G_t = sum_{k >= t} gamma^(k-t) r_k. Returns (A, G), both (batch, response_len)."""
    returns = discounted_returns(token_level_rewards, response_mask, gamma)
    return masked_whiten(returns, response_mask), returns


# ---- outcome (group) estimators -------------------------------------------------------------


def _dense_group_ids(group_index, batch_size: int, device) -> torch.Tensor:
    """Group ids of any hashable kind -> (batch,) long tensor of 0..G-1 in first-seen order."""
    if group_index is None:
        raise ValueError("group_index is required by group estimators (grpo, rloo, reinforce_plus_plus_baseline)")
    keys = group_index.tolist() if hasattr(group_index, "tolist") else list(group_index)
    if len(keys) != batch_size:
        raise ValueError(f"group_index has {len(keys)} entries but the batch has {batch_size} rows")
    ids: dict = {}
    return torch.tensor([ids.setdefault(k, len(ids)) for k in keys], dtype=torch.long, device=device)


def _group_stats(scores: torch.Tensor, group_index) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row (mean, unbiased std, size) of the row's group; scores (batch,) -> three (batch,)."""
    ids = _dense_group_ids(group_index, scores.shape[0], scores.device)
    num_groups = int(ids.max()) + 1
    zeros = torch.zeros(num_groups, dtype=scores.dtype, device=scores.device)
    counts = zeros.index_add(0, ids, torch.ones_like(scores))
    means = zeros.index_add(0, ids, scores) / counts
    sq_dev = zeros.index_add(0, ids, (scores - means[ids]) ** 2)
    stds = torch.sqrt(sq_dev / (counts - 1).clamp(min=1))
    return means[ids], stds[ids], counts[ids]


def _sequence_scores(token_level_rewards: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """s_i = sum_t m_it * r_it: (batch, response_len) -> (batch,), float32 at least."""
    rewards = token_level_rewards if token_level_rewards.dtype == torch.float64 else token_level_rewards.float()
    return masked_sum(rewards, response_mask, dim=-1)


def _broadcast(adv: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """(batch,) -> (batch, response_len), the row value on valid tokens and 0 elsewhere."""
    out = adv.unsqueeze(-1).expand(response_mask.shape)
    return torch.where(response_mask.bool(), out, torch.zeros_like(out))


def compute_grpo_outcome_advantage(token_level_rewards: torch.Tensor, response_mask: torch.Tensor, group_index,
                                   norm_by_std: bool = True, epsilon: float = 1e-6):
    """GRPO outcome advantage (Shao et al. 2024, DeepSeekMath), broadcast over the response:

        A_i = (s_i - mean_g) / (std_g + eps)     std_g unbiased (torch.std), g = group of i
        A_i =  s_i - mean_g                      with norm_by_std=False (Dr. GRPO, Liu et al. 2025)
    Groups of one sample get A = 0. Inputs (batch, response_len) and group_index (batch,);
    returns (A, A), both (batch, response_len)."""
    scores = _sequence_scores(token_level_rewards, response_mask)
    mean, std, count = _group_stats(scores, group_index)
    adv = scores - mean
    if norm_by_std:
        adv = adv / (std + epsilon)
    adv = torch.where(count > 1, adv, torch.zeros_like(adv))
    out = _broadcast(adv, response_mask)
    return out, out


def compute_rloo_outcome_advantage(token_level_rewards: torch.Tensor, response_mask: torch.Tensor, group_index):
    """RLOO (Kool et al. 2019; Ahmadian et al. 2024): leave-one-out baseline within the group,

        A_i = s_i - (1 / (k - 1)) * sum_{j != i} s_j  =  k / (k - 1) * (s_i - mean_g),   k = |g|.
    Groups of one sample get A = 0. Returns (A, A), both (batch, response_len)."""
    scores = _sequence_scores(token_level_rewards, response_mask)
    mean, _, count = _group_stats(scores, group_index)
    adv = (scores - mean) * count / (count - 1).clamp(min=1)
    adv = torch.where(count > 1, adv, torch.zeros_like(adv))
    out = _broadcast(adv, response_mask)
    return out, out


def compute_reinforce_plus_plus_baseline_advantage(token_level_rewards: torch.Tensor, response_mask: torch.Tensor,
                                                   group_index):
    """REINFORCE++-baseline (Hu 2025): b_i = s_i - mean_g broadcast over the response, then
    whitened over all valid tokens of the batch: A = whiten(b). Groups of one give b = 0.
    Returns (A, A), both (batch, response_len)."""
    scores = _sequence_scores(token_level_rewards, response_mask)
    mean, _, _ = _group_stats(scores, group_index)
    out = masked_whiten(_broadcast(scores - mean, response_mask), response_mask)
    return out, out


# ---- registry -------------------------------------------------------------------------------


def _gae_entry(*, token_level_rewards, response_mask, values=None, group_index=None, config=AdvantageConfig()):
    if values is None:
        raise ValueError("algorithm.adv_estimator=gae needs critic values (values=None was passed)")
    return compute_gae(token_level_rewards, values, response_mask, config.gamma, config.lam)


def _grpo_entry(*, token_level_rewards, response_mask, values=None, group_index=None, config=AdvantageConfig()):
    return compute_grpo_outcome_advantage(token_level_rewards, response_mask, group_index,
                                          config.norm_by_std, config.epsilon)


def _rloo_entry(*, token_level_rewards, response_mask, values=None, group_index=None, config=AdvantageConfig()):
    return compute_rloo_outcome_advantage(token_level_rewards, response_mask, group_index)


def _rpp_entry(*, token_level_rewards, response_mask, values=None, group_index=None, config=AdvantageConfig()):
    return compute_reinforce_plus_plus_advantage(token_level_rewards, response_mask, config.gamma)


def _rpp_baseline_entry(*, token_level_rewards, response_mask, values=None, group_index=None,
                        config=AdvantageConfig()):
    return compute_reinforce_plus_plus_baseline_advantage(token_level_rewards, response_mask, group_index)


ADVANTAGE_ESTIMATORS = {
    "gae": _gae_entry,
    "grpo": _grpo_entry,
    "rloo": _rloo_entry,
    "reinforce_plus_plus": _rpp_entry,
    "reinforce_plus_plus_baseline": _rpp_baseline_entry,
}


def get_advantage_estimator(name: str):
    """The registry entry for `name`; ValueError listing the valid names otherwise."""
    if name not in ADVANTAGE_ESTIMATORS:
        raise ValueError(f"unknown advantage estimator {name!r}; valid: {sorted(ADVANTAGE_ESTIMATORS)}")
    return ADVANTAGE_ESTIMATORS[name]

"""The driver's advantage phase: optional in-reward KL penalty, then the configured estimator.

Pure glue between DataProto and the tensor functions in `rlsys.algorithms`; the estimator
is picked from the registry by name, not by branches here.
"""

from __future__ import annotations

import numpy as np
import torch

from rlsys.algorithms import AdvantageConfig, apply_kl_penalty, get_advantage_estimator
from rlsys.protocol import DataProto


def group_index_from_uids(uids: np.ndarray) -> torch.Tensor:
    """Map prompt uids (any hashable) to dense group ids 0..G-1, in order of first appearance."""
    ids: dict = {}
    return torch.tensor([ids.setdefault(u, len(ids)) for u in uids], dtype=torch.long)


def compute_advantage_phase(batch: DataProto, algo_cfg, kl_ctrl=None) -> tuple[DataProto, dict]:
    """Adds `token_level_rewards`, `advantages`, `returns` to the batch; returns (batch, metrics)."""
    mask = batch.batch["response_mask"].float()
    scores = batch.batch["token_level_scores"]
    metrics: dict = {}
    if algo_cfg.use_kl_in_reward:
        rewards, kl_metrics = apply_kl_penalty(
            scores, batch.batch["old_log_probs"], batch.batch["ref_log_prob"], mask,
            kl_coef=kl_ctrl.value, kl_penalty=algo_cfg.kl_penalty,
        )
        metrics.update(kl_metrics)
        metrics["actor/kl_coef"] = kl_ctrl.value
    else:
        rewards = scores
    estimator = get_advantage_estimator(algo_cfg.adv_estimator)
    advantages, returns = estimator(
        token_level_rewards=rewards,
        response_mask=mask,
        values=batch.batch["values"] if "values" in batch.batch.keys() else None,
        group_index=group_index_from_uids(batch.non_tensor_batch["uid"]),
        config=AdvantageConfig(gamma=algo_cfg.gamma, lam=algo_cfg.lam, norm_by_std=algo_cfg.norm_adv_by_std_in_grpo),
    )
    batch.batch["token_level_rewards"] = rewards
    batch.batch["advantages"] = advantages
    batch.batch["returns"] = returns
    return batch, metrics

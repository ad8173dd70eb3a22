"""RL math as pure torch functions: advantages, policy/value losses, KL, masked reductions.

No Ray, no DataProto: every function takes and returns tensors shaped `(batch, response_len)`
(or `(batch,)`), and states its formula and paper variant in its docstring. The driver picks an
advantage estimator by name from `ADVANTAGE_ESTIMATORS`.
"""

from rlsys.algorithms.advantages import (
    ADVANTAGE_ESTIMATORS,
    AdvantageConfig,
    compute_gae,
    compute_grpo_outcome_advantage,
    compute_reinforce_plus_plus_advantage,
    compute_reinforce_plus_plus_baseline_advantage,
    compute_rloo_outcome_advantage,
    discounted_returns,
    gae_raw,
    get_advantage_estimator,
)
from rlsys.algorithms.kl import (
    KL_ESTIMATORS,
    AdaptiveKLController,
    FixedKLController,
    apply_kl_penalty,
    get_kl_controller,
    kl_penalty,
)
from rlsys.algorithms.masked import masked_mean, masked_sum, masked_var, masked_whiten
from rlsys.algorithms.policy_loss import LOSS_AGG_MODES, agg_loss, compute_entropy_from_logits, compute_policy_loss
from rlsys.algorithms.rewards_shaping import scores_to_token_level
from rlsys.algorithms.rollout_correction import rollout_logprob_gap, truncated_is_weights
from rlsys.algorithms.value_loss import compute_value_loss

__all__ = [
    "ADVANTAGE_ESTIMATORS", "AdvantageConfig", "compute_gae", "compute_grpo_outcome_advantage",
    "compute_reinforce_plus_plus_advantage", "compute_reinforce_plus_plus_baseline_advantage",
    "compute_rloo_outcome_advantage", "discounted_returns", "gae_raw", "get_advantage_estimator",
    "KL_ESTIMATORS", "AdaptiveKLController", "FixedKLController", "apply_kl_penalty", "get_kl_controller",
    "kl_penalty", "masked_mean", "masked_sum", "masked_var", "masked_whiten", "LOSS_AGG_MODES", "agg_loss",
    "compute_entropy_from_logits", "compute_policy_loss", "scores_to_token_level", "compute_value_loss",
    "rollout_logprob_gap", "truncated_is_weights",
]

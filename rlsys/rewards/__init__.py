"""Rule-based reward functions, chosen by `data_source` or given as `reward.fn`.

A reward function is a plain callable
    fn(data_source: str, solution_str: str, ground_truth: str, extra_info: dict | None) -> float
(verl's signature). `reward.fn` names one as `package.module:function` or `path/to/file.py:function`;
unset, the built-in verifiers are used (`rlsys.rewards.builtin`: arithmetic, GSM8K `####`,
MATH `\\boxed{}`). `make_reward_fn` wraps one into a batch scorer with the `reward.on_error` policy.

    score_batch = make_reward_fn(config.reward.fn, config.reward.on_error, config.reward.format_score)
    scores, errors = score_batch(data_sources, texts, ground_truths, extra_infos)
"""

from __future__ import annotations

from rlsys.rewards.builtin import builtin_reward
from rlsys.rewards.loading import RewardFn, load_reward_fn
from rlsys.rewards.scoring import RewardScoringError, ScoreBatch, make_reward_fn

_builtin = builtin_reward  # the dispatcher's former name

__all__ = ["RewardFn", "RewardScoringError", "ScoreBatch", "builtin_reward", "load_reward_fn", "make_reward_fn"]

"""Start-of-run checks for settings that are each valid alone but conflict together.

`check_config` runs before Ray starts; it first checks every numeric key's range
(`rlsys.config.ranges`).

Each error names the keys that conflict and what to set instead.
"""

from __future__ import annotations

from rlsys.algorithms import ADVANTAGE_ESTIMATORS
from rlsys.config.ranges import check_ranges

GROUP_ESTIMATORS = {"grpo", "rloo", "reinforce_plus_plus_baseline"}


def check_config(config, cuda_available: bool) -> None:
    check_ranges(config)  # every numeric key in its range first (rlsys.config.ranges)
    from rlsys.rollout.agent.loop import check_multi_turn_config

    check_multi_turn_config(config)  # rollout.multi_turn: choices, env and tools load
    algo, rollout, trainer = config.algorithm, config.rollout, config.trainer
    if algo.adv_estimator not in ADVANTAGE_ESTIMATORS:
        raise ValueError(
            f"algorithm.adv_estimator={algo.adv_estimator!r} is unknown; valid: {sorted(ADVANTAGE_ESTIMATORS)}"
        )
    if algo.adv_estimator in GROUP_ESTIMATORS and rollout.n < 2:
        raise ValueError(
            f"algorithm.adv_estimator={algo.adv_estimator} compares samples of the same prompt and needs "
            f"rollout.n >= 2 (got rollout.n={rollout.n}); set rollout.n=2 or more, or algorithm.adv_estimator=gae"
        )
    if rollout.name not in ("vllm", "hf"):
        raise ValueError(f"rollout.name={rollout.name!r}: expected vllm or hf")
    if config.weight_sync.load_mode not in ("auto", "layerwise", "direct"):
        raise ValueError(f"weight_sync.load_mode={config.weight_sync.load_mode!r}: expected auto, layerwise or direct")
    if trainer.device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"trainer.device={trainer.device!r}: expected auto, cpu or cuda")
    if trainer.device == "cuda" and not cuda_available:
        raise ValueError("trainer.device=cuda but no CUDA device is visible; set trainer.device=auto or cpu")
    if algo.use_kl_in_reward and config.actor.use_kl_loss:
        raise ValueError(
            "algorithm.use_kl_in_reward=true and actor.use_kl_loss=true both apply a KL penalty; "
            "choose one (set the other to false)"
        )
    if rollout.tensor_parallel_size < 1 or trainer.n_devices_per_node % rollout.tensor_parallel_size:
        raise ValueError(
            f"rollout.tensor_parallel_size={rollout.tensor_parallel_size} must divide "
            f"trainer.n_devices_per_node={trainer.n_devices_per_node}"
        )
    ref_budget = config.ref.max_tokens_per_micro_batch
    if ref_budget is not None and ref_budget <= 0:
        raise ValueError(f"ref.max_tokens_per_micro_batch={ref_budget} must be positive (or null)")
    from rlsys.workers.attention import check_backend_name

    check_backend_name(config.actor.attention_backend)
    check_backend_name(config.critic.attention_backend, "critic.attention_backend")
    bad_steps = [s for s in trainer.profile_steps if not (isinstance(s, int) and not isinstance(s, bool) and s >= 1)]
    if bad_steps:
        raise ValueError(f"trainer.profile_steps={list(trainer.profile_steps)}: training steps are integers >= 1 "
                         f"(bad: {bad_steps})")
    if config.actor.logprob_chunk_size <= 0:
        raise ValueError(f"actor.logprob_chunk_size={config.actor.logprob_chunk_size} must be positive")
    if algo.rollout_correction.tis_cap is not None and not algo.rollout_correction.tis_cap > 0:
        raise ValueError(f"algorithm.rollout_correction.tis_cap={algo.rollout_correction.tis_cap} must be "
                         "positive (or null for off)")
    if trainer.max_staleness > 0 and config.placement != "split":
        raise ValueError(
            f"trainer.max_staleness={trainer.max_staleness} overlaps generation with training, which needs "
            f"the rollout engines on devices of their own: set placement=split (got placement={config.placement}), "
            "or trainer.max_staleness=0"
        )
    if config.data.max_prompt_length + config.data.max_response_length > rollout.max_model_len:
        raise ValueError(
            f"data.max_prompt_length + data.max_response_length = "
            f"{config.data.max_prompt_length + config.data.max_response_length} exceeds "
            f"rollout.max_model_len={rollout.max_model_len}; raise rollout.max_model_len"
        )


def needs_reference(config) -> bool:
    return config.algorithm.use_kl_in_reward or config.actor.use_kl_loss


def needs_critic(config) -> bool:
    return config.algorithm.adv_estimator == "gae"

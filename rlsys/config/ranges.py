"""Valid ranges of the numeric config keys, checked at start (before Ray starts), naming the key.

One table, `RANGES`, keyed by dotted key; `check_ranges(config)` walks it. Every int and float
key of `rlsys.config.schema.RLConfig` is either in `RANGES` or in `UNRANGED` with the reason it
has none; tests/unit/config/test_ranges.py walks the schema, fails on a key in neither, and
tries an out-of-range value for every ranged key. A float key must also be finite (no nan/inf).

    check_ranges(config)   # ValueError: data.max_response_length=-8 must be >= 1
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Range:
    """low <= value <= high (`low_open`/`high_open`: strict); `nullable`: None is allowed too."""

    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False
    nullable: bool = False

    def describe(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        text = " and ".join(parts) or "finite"
        return f"{text} (or null)" if self.nullable else text

    def contains(self, value) -> bool:
        if value is None:
            return self.nullable
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)


POSITIVE_INT = Range(low=1)
NON_NEGATIVE = Range(low=0)
POSITIVE = Range(low=0, low_open=True)
UNIT = Range(low=0, high=1)
OPTIONAL_POSITIVE_INT = Range(low=1, nullable=True)


def _optim(prefix: str) -> dict[str, Range]:
    return {f"{prefix}.lr": NON_NEGATIVE, f"{prefix}.weight_decay": NON_NEGATIVE,
            f"{prefix}.warmup_steps": NON_NEGATIVE, f"{prefix}.min_lr_ratio": UNIT,
            f"{prefix}.grad_clip": POSITIVE}


RANGES: dict[str, Range] = {
    "data.train_batch_size": POSITIVE_INT,
    "data.val_size": POSITIVE_INT,
    "data.train_size": POSITIVE_INT,
    "data.max_prompt_length": POSITIVE_INT,
    "data.max_response_length": POSITIVE_INT,
    "rollout.n": POSITIVE_INT,
    "rollout.temperature": NON_NEGATIVE,
    "rollout.top_p": Range(low=0, high=1, low_open=True),
    "rollout.top_k": Range(low=-1),  # -1 and 0: off
    "rollout.tensor_parallel_size": POSITIVE_INT,
    "rollout.max_model_len": Range(low=2),
    "rollout.gpu_memory_utilization": Range(low=0, high=1, low_open=True),
    "rollout.kv_cache_space_gb": POSITIVE_INT,
    "rollout.val_temperature": NON_NEGATIVE,
    "rollout.val_n": POSITIVE_INT,
    "rollout.multi_turn.max_turns": POSITIVE_INT,
    "rollout.multi_turn.max_tokens_per_turn": POSITIVE_INT,
    "rollout.multi_turn.tool_timeout_s": POSITIVE,
    **_optim("actor.optim"),
    "actor.ppo_mini_batch_size": POSITIVE_INT,
    "actor.micro_batch_size_per_rank": POSITIVE_INT,
    "actor.max_tokens_per_micro_batch": OPTIONAL_POSITIVE_INT,
    "actor.logprob_chunk_size": POSITIVE_INT,
    "actor.ppo_epochs": POSITIVE_INT,
    "actor.clip_ratio_low": NON_NEGATIVE,
    "actor.clip_ratio_high": NON_NEGATIVE,
    "actor.clip_ratio_c": Range(low=1, low_open=True),  # dual-clip bound, only meaningful above 1
    "actor.kl_loss_coef": NON_NEGATIVE,
    "ref.micro_batch_size_per_rank": POSITIVE_INT,
    "ref.max_tokens_per_micro_batch": OPTIONAL_POSITIVE_INT,
    **_optim("critic.optim"),
    "critic.ppo_mini_batch_size": POSITIVE_INT,
    "critic.micro_batch_size_per_rank": POSITIVE_INT,
    "critic.max_tokens_per_micro_batch": OPTIONAL_POSITIVE_INT,
    "critic.ppo_epochs": POSITIVE_INT,
    "critic.cliprange_value": NON_NEGATIVE,
    "algorithm.gamma": UNIT,
    "algorithm.lam": UNIT,
    "algorithm.kl_ctrl.kl_coef": NON_NEGATIVE,
    "algorithm.kl_ctrl.target_kl": POSITIVE,
    "algorithm.kl_ctrl.horizon": POSITIVE_INT,
    "algorithm.rollout_correction.tis_cap": Range(low=0, low_open=True, nullable=True),
    "weight_sync.bucket_size_mb": POSITIVE_INT,
    "weight_sync.timeout_s": POSITIVE,
    "reward.timeout_s": Range(low=0, low_open=True, nullable=True),
    "reward.max_error_fraction": UNIT,
    "trainer.total_steps": POSITIVE_INT,
    "trainer.test_freq": NON_NEGATIVE,  # 0: never
    "trainer.seed": NON_NEGATIVE,
    "trainer.nnodes": POSITIVE_INT,
    "trainer.n_devices_per_node": POSITIVE_INT,
    "trainer.rollout_devices_per_node": POSITIVE_INT,
    "trainer.ray_num_cpus": OPTIONAL_POSITIVE_INT,
    "trainer.worker_timeout_s": POSITIVE,
    "trainer.save_freq": Range(low=-1),  # <= 0: never (-1 is the default)
    "trainer.max_ckpt_to_keep": OPTIONAL_POSITIVE_INT,
    "trainer.max_staleness": NON_NEGATIVE,  # 0: synchronous
}

# Numeric keys with no range beyond being finite, and why.
UNRANGED: dict[str, str] = {
    "actor.entropy_coeff": "its sign is the user's choice (a negative coefficient penalises entropy)",
    "reward.format_score": "partial credit on the reward function's own scale",
    "rollout.multi_turn.tool_error_penalty": "added to the score; its sign is the user's choice",
}


def _get(config, key: str):
    value = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


def check_ranges(config) -> None:
    """ValueError naming the first key outside its range (or a non-finite float key)."""
    for key, valid in RANGES.items():
        value = _get(config, key)
        if not valid.contains(value):
            raise ValueError(f"{key}={value!r} is out of range: must be {valid.describe()}")
    for key in UNRANGED:
        value = _get(config, key)
        if not math.isfinite(value):
            raise ValueError(f"{key}={value!r} must be a finite number")

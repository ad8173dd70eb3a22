"""The step's reward-error check: too many failed samples stop the run, a few log one warning.

With `reward.on_error=zero` a failing reward function scores its samples 0 and the run goes
on; if every sample fails, the run would train on all-zero rewards and exit 0. After the reward
phase the driver calls `check_reward_errors`: above `reward.max_error_fraction` of the step's
samples failing it raises `RewardScoringError` with the function's first error (sample, type,
message); at or below it, a step with errors prints one warning line.
"""

from __future__ import annotations

import sys

from tqdm import tqdm

from rlsys.protocol import DataProto
from rlsys.rewards import RewardScoringError


def check_reward_errors(batch: DataProto, reward_cfg, step: int) -> int:
    """Pop the reward worker's `reward_error` column; raise or warn; return the number of errors."""
    messages = batch.pop(non_tensor_batch_keys=["reward_error"]).non_tensor_batch["reward_error"]
    failed = [m for m in messages if m]
    if not failed:
        return 0
    fraction = len(failed) / len(messages)
    name = reward_cfg.fn or "built-in"
    summary = (f"step {step}: reward function {name} failed on {len(failed)}/{len(messages)} samples "
               f"({fraction:.0%}); first: {failed[0]}")
    if fraction > reward_cfg.max_error_fraction:
        raise RewardScoringError(f"{summary}; that is above reward.max_error_fraction="
                                 f"{reward_cfg.max_error_fraction:g}, so the run stops (fix the function, "
                                 "or raise reward.max_error_fraction)")
    tqdm.write(f"warning: {summary} (scored 0, reward/num_errors)", file=sys.stderr)  # a line of its own beside the bar
    return len(failed)

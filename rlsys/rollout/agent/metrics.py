"""Per-batch multi-turn metrics from the agent loop's extra tensors ({} for single-turn batches).

multi_turn/turns_mean         model turns per trajectory
multi_turn/tool_call_rate     fraction of trajectories the environment answered at least once
                              (for ToolEnv: that called a tool)
multi_turn/observations_mean  observations (tool results) per trajectory
multi_turn/truncated_rate     fraction ended by a budget (max_turns, response length)
multi_turn/error_rate         fraction with a per-sample error (e.g. a tool that raised)
multi_turn/env_reward_mean    the environment's summed reward per trajectory
"""

from __future__ import annotations

import numpy as np


def multi_turn_metrics(batch) -> dict[str, float]:
    """`batch`: a DataProto (or anything with .batch / .non_tensor_batch)."""
    b = batch.batch
    if b is None or "multi_turn_num_turns" not in b.keys():
        return {}
    observations = b["multi_turn_num_observations"].float()
    metrics = {
        "multi_turn/turns_mean": float(b["multi_turn_num_turns"].float().mean()),
        "multi_turn/tool_call_rate": float((observations > 0).float().mean()),
        "multi_turn/observations_mean": float(observations.mean()),
        "multi_turn/truncated_rate": float(b["multi_turn_truncated"].float().mean()),
        "multi_turn/env_reward_mean": float(b["env_rewards"].float().mean()),
    }
    errors = batch.non_tensor_batch.get("multi_turn_errors")
    if errors is not None:
        metrics["multi_turn/error_rate"] = float(np.mean([bool(e) for e in errors]))
    return metrics

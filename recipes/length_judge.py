"""Worked example of a user role: a judge that scores responses for brevity.

Run it with the GRPO recipe (docs/custom_roles.md walks through it):
    python -m rlsys.main +recipe=grpo_judge
The role lives in the actor's WorkerDict (`roles.judge.placement=colocate`) or in a pool of
its own (`roles.judge.placement=own_pool`); the driver calls `process_rollouts` every step.
"""

from __future__ import annotations

import torch

from rlsys.protocol import DataProto
from rlsys.single_controller import Dispatch, Worker, register


class LengthJudge(Worker):
    """extra_score = -penalty for every response token beyond `max_tokens` (eos included)."""

    def __init__(self, config, model_path: str, max_tokens: int = 3, penalty: float = 0.1):
        super().__init__()
        self.max_tokens, self.penalty = max_tokens, penalty

    @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO)
    def process_rollouts(self, data: DataProto) -> DataProto:
        lengths = data.batch["response_mask"].sum(-1).float()
        over = (lengths - self.max_tokens).clamp(min=0)
        extra = -self.penalty * over
        return DataProto.from_dict(
            {"extra_scores": extra},
            meta_info={"metrics": {"over_length_frac": float((over > 0).float().mean()),
                                   "extra_score_mean": float(extra.mean())}},
        )

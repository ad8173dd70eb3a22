"""One multi-turn trajectory as token lists, and packing a batch of them into the rollout contract.

A trajectory's response is the concatenation, in order, of model turns (the engine's token
ids, response_mask 1, the engine's log-probs) and observations (tokenised once, mask 0,
log-prob 0). `pack_trajectories` pads them into `rlsys.rollout.outputs`' tensors, with one
difference from single-turn packing: `attention_mask` is 1 on observation tokens too (the
model reads them), while `response_mask` is 1 on model tokens only. Extra tensors (N,):
`multi_turn_num_turns`, `multi_turn_num_observations`, `multi_turn_truncated` (1: a budget
ended it), `env_rewards` (the environment's summed rewards); non-tensor `multi_turn_errors`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass
class Trajectory:
    prompt: list[int]
    env: Any
    tokens: list[int] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)  # 1: model token, 0: observation token
    log_probs: list[float] = field(default_factory=list)
    num_turns: int = 0
    num_observations: int = 0
    env_reward: float = 0.0
    errors: list[str] = field(default_factory=list)
    truncated: bool = False
    done: bool = False

    def add_model_turn(self, tokens: list[int], log_probs: list[float]) -> None:
        assert len(tokens) == len(log_probs), "one log-prob per model token"
        self.tokens += tokens
        self.mask += [1] * len(tokens)
        self.log_probs += log_probs
        self.num_turns += 1

    def add_observation(self, tokens: list[int]) -> None:
        self.tokens += tokens
        self.mask += [0] * len(tokens)
        self.log_probs += [0.0] * len(tokens)
        self.num_observations += 1

    def finish(self, truncated: bool = False) -> None:
        self.done = True
        self.truncated = self.truncated or truncated

    @property
    def context(self) -> list[int]:
        """What the engine continues from: prompt, then every token so far."""
        return self.prompt + self.tokens


def pack_trajectories(trajectories: list[Trajectory], response_length: int, pad_token_id: int,
                      drop_truncated: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, np.ndarray]]:
    """(tensors, non_tensors) for a batch; `drop_truncated` zeroes response_mask of truncated rows.

    Shapes: prompts (N, P) left-padded, P = longest prompt; responses / response_mask /
    rollout_log_probs (N, response_length) right-padded; input_ids / attention_mask /
    position_ids (N, P + response_length).
    """
    num = len(trajectories)
    prompt_len = max(len(t.prompt) for t in trajectories)
    prompts = torch.full((num, prompt_len), pad_token_id, dtype=torch.long)
    prompt_mask = torch.zeros((num, prompt_len), dtype=torch.long)
    responses = torch.full((num, response_length), pad_token_id, dtype=torch.long)
    valid = torch.zeros((num, response_length), dtype=torch.long)
    response_mask = torch.zeros((num, response_length), dtype=torch.long)
    log_probs = torch.zeros((num, response_length), dtype=torch.float32)
    for row, t in enumerate(trajectories):
        assert len(t.tokens) <= response_length, "trajectory longer than the response budget"
        length = len(t.tokens)
        prompts[row, prompt_len - len(t.prompt):] = torch.tensor(t.prompt, dtype=torch.long)
        prompt_mask[row, prompt_len - len(t.prompt):] = 1
        if length:
            responses[row, :length] = torch.tensor(t.tokens, dtype=torch.long)
            valid[row, :length] = 1
            if not (drop_truncated and t.truncated):
                response_mask[row, :length] = torch.tensor(t.mask, dtype=torch.long)
            log_probs[row, :length] = torch.tensor(t.log_probs, dtype=torch.float32)
    attention_mask = torch.cat([prompt_mask, valid], dim=1)
    tensors = {
        "prompts": prompts, "responses": responses, "input_ids": torch.cat([prompts, responses], dim=1),
        "attention_mask": attention_mask, "position_ids": (attention_mask.cumsum(dim=1) - 1).clamp(min=0),
        "response_mask": response_mask, "rollout_log_probs": log_probs,
        "multi_turn_num_turns": torch.tensor([t.num_turns for t in trajectories], dtype=torch.long),
        "multi_turn_num_observations": torch.tensor([t.num_observations for t in trajectories], dtype=torch.long),
        "multi_turn_truncated": torch.tensor([int(t.truncated) for t in trajectories], dtype=torch.long),
        "env_rewards": torch.tensor([t.env_reward for t in trajectories], dtype=torch.float32),
    }
    errors = np.empty(num, dtype=object)
    errors[:] = ["; ".join(t.errors) for t in trajectories]
    return tensors, {"multi_turn_errors": errors}

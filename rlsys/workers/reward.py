"""Reward role: decodes responses and scores them with a rule-based reward function.

Outputs `token_level_scores` (batch, response_length) with the sequence score on the last
response token, `scores` (batch,), `reward_errors` (batch,) (1.0 where the reward function
failed and `reward.on_error=zero` scored the sample 0), the non-tensor `reward_error` (batch,)
(the error, naming the sample, or ""; the driver's error-fraction check pops it), and
`meta_info["metrics"]` with `reward/num_errors` for this rank's samples.
"""

from __future__ import annotations

import numpy as np
import torch

from rlsys.algorithms import scores_to_token_level
from rlsys.protocol import DataProto
from rlsys.rewards import RewardScoringError, make_reward_fn
from rlsys.single_controller import Dispatch, Worker, register

__all__ = ["RewardScoringError", "RewardWorker"]


class RewardWorker(Worker):
    def __init__(self, config, model_path: str):
        super().__init__()
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        r = config.reward
        self.score_batch = make_reward_fn(r.fn, r.on_error, r.format_score, r.timeout_s)

    @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO)
    def compute_score(self, data: DataProto) -> DataProto:
        responses = data.batch["responses"]
        mask = data.batch["response_mask"]
        texts = self.tokenizer.batch_decode(
            [r[m.bool()].tolist() for r, m in zip(responses, mask)], skip_special_tokens=True
        )
        non_tensors = data.non_tensor_batch
        extra_infos = non_tensors["extra_info"] if "extra_info" in non_tensors else None
        try:
            scores, errors = self.score_batch(non_tensors["data_source"], texts, non_tensors["ground_truth"],
                                              extra_infos)
        except RewardScoringError as exc:
            raise RewardScoringError(f"rank {self.rank}: {exc}") from exc.__cause__
        scores_t = torch.tensor(scores, dtype=torch.float32)
        if "env_rewards" in data.batch.keys():  # multi-turn rollouts: the environment's own rewards (rlsys/envs)
            scores_t = scores_t + data.batch["env_rewards"].float()
        error_flags = torch.zeros(len(texts), dtype=torch.float32)
        error_flags[[e["index"] for e in errors]] = 1.0
        messages = np.full(len(texts), "", dtype=object)
        for e in errors:
            messages[e["index"]] = (f"sample {e['index']} of rank {self.rank} (data_source={e['data_source']!r}, "
                                    f"ground_truth={e['ground_truth']!r}): {e['error']}")
        return DataProto.from_dict(
            {"token_level_scores": scores_to_token_level(scores_t, mask), "scores": scores_t,
             "reward_errors": error_flags},
            {"reward_error": messages},
            meta_info={"metrics": {"reward/num_errors": len(errors)}},
        )

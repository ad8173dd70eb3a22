"""Reward role: decodes responses and scores them with a rule-based reward function.

Outputs `token_level_scores` (batch, response_length) with the sequence score on the last
response token, and `scores` (batch,).
"""

from __future__ import annotations

import torch

from rlsys.algorithms import scores_to_token_level
from rlsys.protocol import DataProto
from rlsys.rewards import load_reward_fn
from rlsys.single_controller import Dispatch, Worker, register


class RewardScoringError(RuntimeError):
    """A reward function raised on a sample; the message names the sample and the cause."""


class RewardWorker(Worker):
    def __init__(self, config, model_path: str):
        super().__init__()
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.reward_fn = load_reward_fn(config.reward.fn)

    @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO)
    def compute_score(self, data: DataProto) -> DataProto:
        responses = data.batch["responses"]
        mask = data.batch["response_mask"]
        texts = self.tokenizer.batch_decode(
            [r[m.bool()].tolist() for r, m in zip(responses, mask)], skip_special_tokens=True
        )
        sources = data.non_tensor_batch["data_source"]
        truths = data.non_tensor_batch["ground_truth"]
        scores = []
        for i, text in enumerate(texts):
            try:
                scores.append(float(self.reward_fn(sources[i], text, truths[i], None)))
            except Exception as exc:
                raise RewardScoringError(
                    f"reward function failed on sample {i} of rank {self.rank} "
                    f"(data_source={sources[i]!r}, response={text!r}, ground_truth={truths[i]!r}): "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        scores_t = torch.tensor(scores, dtype=torch.float32)
        return DataProto.from_dict(
            {"token_level_scores": scores_to_token_level(scores_t, mask), "scores": scores_t}
        )

"""Shared setup for roles that hold a causal LM (actor and reference): load, shard, score."""

from __future__ import annotations

import torch

from rlsys.protocol import DataProto
from rlsys.workers import model_utils


def model_inputs(batch):
    return batch["input_ids"], batch["attention_mask"], batch["position_ids"]


class PolicyModelMixin:
    """Shared model setup for roles that hold a causal LM (actor and reference)."""

    def _load_policy(self, config, trainable: bool):
        from transformers import AutoModelForCausalLM

        self.config = config
        self.device = model_utils.resolve_device(config.trainer.device)
        model_utils.init_distributed(self.device, config.trainer.worker_timeout_s)
        torch.manual_seed(config.trainer.seed)
        dtype = model_utils.resolve_dtype(config.model.dtype, self.device)
        model = AutoModelForCausalLM.from_pretrained(self.model_path, torch_dtype=dtype)
        model.to(self.device)
        model.train(trainable)
        model.requires_grad_(trainable)
        return model_utils.shard_model(model)

    @torch.no_grad()
    def _log_probs(self, model, data: DataProto, key: str, with_entropy: bool) -> DataProto:
        data = data.to(self.device)
        response_length = data.batch["responses"].shape[1]
        micro = self.config.actor.micro_batch_size_per_rank
        outs, ents = [], []
        for chunk in data.split(micro):
            lp, ent = model_utils.response_log_probs(
                model, *model_inputs(chunk.batch), response_length, self.config.rollout.temperature, with_entropy
            )
            outs.append(lp)
            ents.append(ent)
        tensors = {key: torch.cat(outs).cpu()}
        if with_entropy:
            tensors["entropys"] = torch.cat(ents).cpu()
        return DataProto.from_dict(tensors)

"""Shared setup for roles that hold a causal LM (actor and reference): load, shard, score.

Scoring runs micro-batch by micro-batch (`rlsys.workers.micro_batches`: fixed-size or
token-budget, each trimmed to its longest sequence) through a `ResponseScorer`, the FSDP2
root whose forward returns response log-probs without full-vocabulary logits.
"""

from __future__ import annotations

import torch

from rlsys.protocol import DataProto
from rlsys.workers import model_utils
from rlsys.workers.attention import resolve_backend, use_attention_backend
from rlsys.workers.lm_head import ResponseScorer
from rlsys.workers.micro_batches import HostLengths, micro_partitions, pack_micro_batch, to_device, unpack_response


class PolicyModelMixin:
    """Shared model setup for roles that hold a causal LM (actor and reference)."""

    def _load_policy(self, config, trainable: bool, param_dtype: torch.dtype, compute_dtype: torch.dtype,
                     gradient_checkpointing: bool = False, chunk_size: int = 1024, shard: bool = True,
                     compile_model: bool = False, attention_backend: str = "auto", keep_logits: bool = False):
        """Load the HF model in `param_dtype`, shard it (FSDP2, compute in `compute_dtype`);
        sets `self.model` (the HF model, for names and saving) and `self.scorer` (the root).
        `shard=False` keeps a plain module (one frozen copy needs no FSDP: no collectives).
        `compile_model`: torch.compile the decoder layers and the LM-head chunks.
        `attention_backend`: `actor.attention_backend` (rlsys.workers.attention).
        `keep_logits`: `actor.logprob_keep_logits` (rlsys.workers.lm_head.chunked_log_probs).
        At one rank, FSDP2 keeps each layer's compute-dtype copy from forward to backward
        (`reshard_after_forward=False`): resharding frees nothing there, it only re-casts."""
        from transformers import AutoModelForCausalLM

        self.config = config
        self.device = model_utils.resolve_device(config.trainer.device)
        model_utils.init_distributed(self.device, config.trainer.worker_timeout_s)
        torch.manual_seed(config.trainer.seed)
        model = AutoModelForCausalLM.from_pretrained(self.model_path, torch_dtype=param_dtype)
        model.to(self.device)
        use_attention_backend(model, resolve_backend(attention_backend, self.device))
        if gradient_checkpointing:
            model_utils.enable_gradient_checkpointing(model)
        model.train(trainable)
        model.requires_grad_(trainable)
        if compile_model:
            model_utils.compile_decoder_layers(model)
        scorer = ResponseScorer(model, chunk_size, compiled=compile_model, keep_logits=keep_logits)
        self.model = model
        if shard:
            world = torch.distributed.get_world_size()
            scorer = model_utils.shard_model(model, scorer, model_utils.mixed_precision(param_dtype, compute_dtype),
                                             reshard_after_forward=False if world == 1 else None)
        self.scorer = scorer
        return model

    def _score_micro(self, micro_batch, response_length: int, with_entropy: bool, lengths: HostLengths | None = None):
        """(log_probs, entropy or None, tokens computed) for one micro-batch's TensorDict,
        log-probs (rows, response_length); `lengths`: its rows' lengths on the host, if known."""
        packed = pack_micro_batch(micro_batch["input_ids"], micro_batch["attention_mask"], response_length, lengths)
        log_probs, entropy = self.scorer(packed, self.config.rollout.temperature, with_entropy)
        log_probs = unpack_response(log_probs, response_length)
        entropy = unpack_response(entropy, response_length) if with_entropy else None
        return log_probs, entropy, packed.num_computed_tokens

    @torch.no_grad()
    def _log_probs(self, data: DataProto, key: str, with_entropy: bool, micro_cfg) -> DataProto:
        """Score every row in micro-batches of `micro_cfg` (micro_batch_size_per_rank /
        max_tokens_per_micro_batch); results come back in the input's row order, read back
        once (no device sync per micro-batch)."""
        data = data.to(self.device)
        batch = data.batch
        response_length = batch["responses"].shape[1]
        lengths = HostLengths.of(batch["attention_mask"], response_length)
        order, outputs = [], []
        for rows in micro_partitions(batch["attention_mask"], micro_cfg.micro_batch_size_per_rank,
                                     micro_cfg.max_tokens_per_micro_batch, lengths.total):
            index = torch.tensor(rows)
            lp, ent, _ = self._score_micro(batch[to_device(index, self.device)], response_length, with_entropy,
                                           lengths[index])
            order.append(index)
            outputs.append(torch.stack([lp, ent]) if with_entropy else lp.unsqueeze(0))
        scored = torch.cat(outputs, dim=1)  # (1 or 2, rows in partition order, R)
        in_order = torch.empty_like(scored)
        in_order[:, to_device(torch.cat(order), self.device)] = scored
        in_order = in_order.cpu()
        tensors = {key: in_order[0]}
        if with_entropy:
            tensors["entropys"] = in_order[1]
        return DataProto.from_dict(tensors)

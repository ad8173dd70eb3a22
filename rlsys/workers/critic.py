"""Critic role: a value head on the policy's backbone, trained with the clipped value loss.

V(s_t) for response token t is read at the position that predicts it (p_i - 1 + t in the
packed micro-batch), so values line up with rewards and log-probs, shape
(batch, response_length). Precision, micro-batching, attention kernel and one-rank local
accumulation as the actor's (`critic.*` keys). Packed rows are right-padded, so the value model
runs without a padding mask, as the actor's scorer does (causal attention hides the padding).
"""

from __future__ import annotations

from collections import defaultdict

import torch

from rlsys.algorithms import compute_value_loss
from rlsys.protocol import DataProto
from rlsys.single_controller import Dispatch, Worker, register
from rlsys.workers import model_utils
from rlsys.workers.attention import resolve_backend, use_attention_backend
from rlsys.workers.lm_head import gather_response_positions
from rlsys.workers.micro_batches import (HostLengths, micro_batch_weight, micro_partitions, pack_micro_batch, to_device,
                                         unpack_response)


class CriticWorker(Worker):
    def __init__(self, config, model_path: str):
        super().__init__()
        self.config = config
        self.model_path = model_path

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def init_model(self) -> None:
        from transformers import AutoModelForTokenClassification

        cfg = self.config
        self.device = model_utils.resolve_device(cfg.trainer.device)
        model_utils.init_distributed(self.device, cfg.trainer.worker_timeout_s)
        torch.manual_seed(cfg.trainer.seed)
        param_dtype, compute_dtype = model_utils.role_dtypes(cfg.critic, self.device)
        model = AutoModelForTokenClassification.from_pretrained(self.model_path, num_labels=1, torch_dtype=param_dtype)
        model.to(self.device)
        use_attention_backend(model, resolve_backend(cfg.critic.attention_backend, self.device,
                                                     "critic.attention_backend"))
        if cfg.critic.gradient_checkpointing:
            model_utils.enable_gradient_checkpointing(model)
        one_rank = self.world_size == 1
        self.model = model_utils.shard_model(model, mp_policy=model_utils.mixed_precision(param_dtype, compute_dtype),
                                             reshard_after_forward=False if one_rank else None)
        self.local_accumulation = one_rank  # as the actor's (model_utils.set_micro_batch_sync)
        self.optimizer, self.lr_scheduler = model_utils.build_optimizer(
            self.model, cfg.critic.optim, cfg.trainer.total_steps
        )

    def _values(self, batch, response_length: int, lengths: HostLengths | None = None) -> tuple[torch.Tensor, int]:
        """(values (rows, response_length) fp32, 0 off the response mask; tokens computed);
        `lengths`: the rows' lengths on the host, if known."""
        packed = pack_micro_batch(batch["input_ids"], batch["attention_mask"], response_length, lengths)
        logits = self.model(input_ids=packed.input_ids, position_ids=packed.position_ids).logits
        values = gather_response_positions(logits, packed).squeeze(-1).float()
        values = unpack_response(values * packed.response_valid, response_length)
        return values * batch["response_mask"], packed.num_computed_tokens

    def _partitions(self, batch, lengths: HostLengths) -> list[list[int]]:
        cfg = self.config.critic
        return micro_partitions(batch["attention_mask"], cfg.micro_batch_size_per_rank, cfg.max_tokens_per_micro_batch,
                                lengths.total)

    @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO)
    def compute_values(self, data: DataProto) -> DataProto:
        data = data.to(self.device)
        response_length = data.batch["responses"].shape[1]
        lengths = HostLengths.of(data.batch["attention_mask"], response_length)
        values = torch.zeros(data.batch["responses"].shape, dtype=torch.float32, device=self.device)
        with torch.no_grad():
            for rows in self._partitions(data.batch, lengths):
                index = to_device(torch.tensor(rows), self.device)
                values[index] = self._values(data.batch[index], response_length, lengths[rows])[0]
        return DataProto.from_dict({"values": values.cpu()})

    @register(dispatch_mode=Dispatch.DP_COMPUTE_METRIC)
    def update_critic(self, data: DataProto) -> dict:
        cfg = self.config.critic
        data = data.to(self.device)
        response_length = data.batch["responses"].shape[1]
        metrics = defaultdict(list)  # name -> per-micro-batch 0-dim device tensors, read once
        grad_norms = []
        for _ in range(cfg.ppo_epochs):
            for mini in data.split(cfg.ppo_mini_batch_size // self.world_size):
                self.optimizer.zero_grad(set_to_none=True)
                lengths = HostLengths.of(mini.batch["attention_mask"], response_length)
                parts = self._partitions(mini.batch, lengths)
                for index, rows in enumerate(parts):
                    b = mini.batch[to_device(torch.tensor(rows), self.device)]
                    if self.local_accumulation:
                        model_utils.set_micro_batch_sync(self.model, last=index == len(parts) - 1)
                    vpreds, _ = self._values(b, response_length, lengths[rows])
                    vf_loss, vf_clipfrac = compute_value_loss(
                        vpreds=vpreds, values=b["values"], returns=b["returns"],
                        response_mask=b["response_mask"].float(), cliprange_value=cfg.cliprange_value,
                        loss_agg_mode=cfg.loss_agg_mode,
                    )
                    weight = micro_batch_weight(b["response_mask"], mini.batch["response_mask"], cfg.loss_agg_mode)
                    (vf_loss * weight).backward()
                    metrics["critic/vf_loss"].append(vf_loss.detach())
                    metrics["critic/vf_clipfrac"].append(vf_clipfrac)  # detached 0-dim
                    metrics["critic/vpred_mean"].append(vpreds.detach().mean())
                grad_norms.append(model_utils.clip_grad_norm(self.model, cfg.optim.grad_clip))
                self.optimizer.step()
        self.lr_scheduler.step()
        return {**model_utils.mean_of_device_metrics(metrics), "critic/grad_norm": sum(grad_norms) / len(grad_norms)}

    # ---- checkpoint: every rank writes its shard -------------------------------------------
    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def save_checkpoint(self, path: str) -> None:
        """Value model, optimizer and lr scheduler under `path`."""
        from pathlib import Path

        from rlsys.workers import checkpoint_io as checkpoint

        checkpoint.save_train_state(Path(path), self.model, self.optimizer, self.lr_scheduler, {}, self.rank)

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def load_checkpoint(self, path: str) -> None:
        from pathlib import Path

        from rlsys.workers import checkpoint_io as checkpoint

        checkpoint.load_train_state(Path(path), self.model, self.optimizer, self.lr_scheduler)

"""Critic role: a value head on the policy's backbone, trained with the clipped value loss.

V(s_t) for response token t is read at the position that predicts it (P-1+t), so values
line up with rewards and log-probs, shape (batch, response_length).
"""

from __future__ import annotations

from collections import defaultdict

import torch

from rlsys.algorithms import compute_value_loss
from rlsys.protocol import DataProto
from rlsys.single_controller import Dispatch, Worker, register
from rlsys.workers import model_utils
from rlsys.workers.policy import model_inputs


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
        dtype = model_utils.resolve_dtype(cfg.model.dtype, self.device)
        model = AutoModelForTokenClassification.from_pretrained(self.model_path, num_labels=1, torch_dtype=dtype)
        self.model = model_utils.shard_model(model.to(self.device))
        self.optimizer, self.lr_scheduler = model_utils.build_optimizer(
            self.model, cfg.critic.optim, cfg.trainer.total_steps
        )

    def _values(self, batch, response_length: int) -> torch.Tensor:
        input_ids, attention_mask, position_ids = model_inputs(batch)
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
        logits = logits.squeeze(-1)
        return logits[:, -response_length - 1 : -1].float() * batch["response_mask"]

    @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO)
    def compute_values(self, data: DataProto) -> DataProto:
        data = data.to(self.device)
        response_length = data.batch["responses"].shape[1]
        with torch.no_grad():
            values = [self._values(c.batch, response_length)
                      for c in data.split(self.config.critic.micro_batch_size_per_rank)]
        return DataProto.from_dict({"values": torch.cat(values).cpu()})

    @register(dispatch_mode=Dispatch.DP_COMPUTE_METRIC)
    def update_critic(self, data: DataProto) -> dict:
        cfg = self.config.critic
        data = data.to(self.device)
        response_length = data.batch["responses"].shape[1]
        metrics = defaultdict(list)
        for _ in range(cfg.ppo_epochs):
            for mini in data.split(cfg.ppo_mini_batch_size // self.world_size):
                micros = mini.split(cfg.micro_batch_size_per_rank)
                self.optimizer.zero_grad(set_to_none=True)
                for micro in micros:
                    b = micro.batch
                    vpreds = self._values(b, response_length)
                    vf_loss, vf_clipfrac = compute_value_loss(
                        vpreds=vpreds, values=b["values"], returns=b["returns"],
                        response_mask=b["response_mask"].float(), cliprange_value=cfg.cliprange_value,
                        loss_agg_mode=cfg.loss_agg_mode,
                    )
                    (vf_loss / len(micros)).backward()
                    metrics["critic/vf_loss"].append(vf_loss.item())
                    metrics["critic/vf_clipfrac"].append(float(vf_clipfrac))
                    metrics["critic/vpred_mean"].append(vpreds.mean().item())
                metrics["critic/grad_norm"].append(model_utils.clip_grad_norm(self.model, cfg.optim.grad_clip))
                self.optimizer.step()
        self.lr_scheduler.step()
        return {k: sum(v) / len(v) for k, v in metrics.items()}

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

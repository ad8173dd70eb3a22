"""Actor role: the policy being trained.

Computes old log-probs and entropy, and runs the PPO-style update (epochs x mini-batches
x micro-batches with gradient accumulation, grad clipping, lr schedule). FSDP2 at every
world size (gloo on CPU, nccl on CUDA): fp32 master weights, gradients and AdamW state,
compute in `actor.compute_dtype`; weights cross to the rollout in `model.dtype`.
Micro-batches are fixed-size or token-budget (`actor.max_tokens_per_micro_batch`).
"""

from __future__ import annotations

from collections import defaultdict

import torch

from rlsys.algorithms import agg_loss, compute_policy_loss, kl_penalty, truncated_is_weights
from rlsys.protocol import DataProto
from rlsys.single_controller import Dispatch, Worker, register
from rlsys.workers import model_utils
from rlsys.workers.profiling import profiled
from rlsys.workers.micro_batches import HostLengths, micro_batch_weight, micro_partitions, to_device
from rlsys.workers.policy import PolicyModelMixin


class NonFiniteLossError(FloatingPointError):
    """Raised when a training step produces a NaN/inf loss or gradient norm."""


class ActorWorker(Worker, PolicyModelMixin):
    def __init__(self, config, model_path: str):
        super().__init__()
        self.config = config
        self.model_path = model_path

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def init_model(self) -> None:
        cfg = self.config.actor
        self.device = model_utils.resolve_device(self.config.trainer.device)
        param_dtype, compute_dtype = model_utils.role_dtypes(cfg, self.device)
        self._load_policy(self.config, trainable=True, param_dtype=param_dtype, compute_dtype=compute_dtype,
                          gradient_checkpointing=cfg.gradient_checkpointing, chunk_size=cfg.logprob_chunk_size,
                          compile_model=model_utils.use_torch_compile(cfg.use_torch_compile, self.device),
                          attention_backend=cfg.attention_backend, keep_logits=cfg.logprob_keep_logits)
        self.serving_dtype = model_utils.resolve_dtype(self.config.model.dtype, self.device)
        self.cast_buffers: dict = {}  # serving-dtype copies of the master weights, kept across syncs
        self.optimizer, self.lr_scheduler = model_utils.build_optimizer(
            self.model, cfg.optim, self.config.trainer.total_steps
        )
        self.num_updates = 0
        # one rank: accumulate micro-batch gradients unsharded (model_utils.set_micro_batch_sync)
        self.local_accumulation = self.world_size == 1

    @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO)
    def compute_log_prob(self, data: DataProto) -> DataProto:
        self.model.eval()
        out = self._log_probs(data, "old_log_probs", with_entropy=True, micro_cfg=self.config.actor)
        self.model.train()
        return out

    def _micro_loss(self, batch, response_length: int, lengths: HostLengths):
        cfg = self.config.actor
        mask = batch["response_mask"].float()
        log_prob, entropy, num_computed = self._score_micro(batch, response_length, True, lengths)
        tis_cap = self.config.algorithm.rollout_correction.tis_cap
        token_weights = None
        if tis_cap is not None:
            token_weights = truncated_is_weights(batch["old_log_probs"], batch["rollout_log_probs"], tis_cap)
        pg_loss, clipfrac, ppo_kl, clipfrac_lower = compute_policy_loss(
            old_log_prob=batch["old_log_probs"], log_prob=log_prob, advantages=batch["advantages"],
            response_mask=mask, clip_ratio_low=cfg.clip_ratio_low, clip_ratio_high=cfg.clip_ratio_high,
            clip_ratio_c=cfg.clip_ratio_c, loss_agg_mode=cfg.loss_agg_mode, token_weights=token_weights,
        )
        entropy_loss = agg_loss(entropy, mask, cfg.loss_agg_mode)
        loss = pg_loss - cfg.entropy_coeff * entropy_loss
        # metrics stay on the device (0-dim tensors), read once per update: a read here would
        # make the host wait for every micro-batch's forward before launching its backward
        stats = {"actor/pg_loss": pg_loss, "actor/pg_clipfrac": clipfrac, "actor/ppo_kl": ppo_kl,
                 "actor/pg_clipfrac_lower": clipfrac_lower, "actor/entropy": entropy_loss}
        if token_weights is not None:
            stats["rollout_corr/tis_weight_mean"] = (token_weights * mask).sum() / mask.sum().clamp(min=1)
        if cfg.use_kl_loss:
            kl = agg_loss(kl_penalty(log_prob, batch["ref_log_prob"], cfg.kl_loss_type), mask, cfg.loss_agg_mode)
            loss = loss + cfg.kl_loss_coef * kl
            stats["actor/kl_loss"] = kl
        return loss, {k: torch.as_tensor(v, dtype=torch.float32, device=self.device).detach()
                      for k, v in stats.items()}, num_computed

    @register(dispatch_mode=Dispatch.DP_COMPUTE_METRIC)
    def update_actor(self, data: DataProto) -> dict:
        """One PPO update over `data`; meta_info["profile_path"] (the driver sets it at
        `trainer.profile_steps`, `{rank}` in it filled here) profiles it (rlsys.workers.profiling)."""
        path = data.meta_info.get("profile_path")
        with profiled(path.format(rank=self.rank) if path else None, self.device):
            return self._update(data)

    def _update(self, data: DataProto) -> dict:
        cfg = self.config.actor
        data = data.to(self.device)
        response_length = data.batch["responses"].shape[1]
        mini_per_rank = cfg.ppo_mini_batch_size // self.world_size
        metrics = defaultdict(list)  # name -> per-micro-batch 0-dim device tensors
        num_computed, num_real = 0, 0
        grad_norms = []
        for _ in range(cfg.ppo_epochs):
            for mini in data.split(mini_per_rank):
                # lengths read once per mini-batch: packing its micro-batches syncs nothing
                lengths = HostLengths.of(mini.batch["attention_mask"], response_length)
                parts = micro_partitions(mini.batch["attention_mask"], cfg.micro_batch_size_per_rank,
                                         cfg.max_tokens_per_micro_batch, lengths.total)
                self.optimizer.zero_grad(set_to_none=True)
                for index, rows in enumerate(parts):
                    micro = mini.batch[to_device(torch.tensor(rows), self.device)]
                    if self.local_accumulation:
                        model_utils.set_micro_batch_sync(self.scorer, last=index == len(parts) - 1)
                    loss, stats, computed = self._micro_loss(micro, response_length, lengths[rows])
                    weight = micro_batch_weight(micro["response_mask"], mini.batch["response_mask"], cfg.loss_agg_mode)
                    (loss * weight).backward()
                    num_computed += computed
                    num_real += int(lengths.total[rows].sum())
                    for k, v in stats.items():
                        metrics[k].append(v)
                grad_norm = model_utils.clip_grad_norm(self.model, cfg.optim.grad_clip)
                if not torch.isfinite(torch.tensor(grad_norm)) or not torch.isfinite(loss.detach()):
                    raise NonFiniteLossError(
                        f"actor update {self.num_updates}: non-finite loss={loss.item()} or grad_norm={grad_norm} "
                        f"on rank {self.rank}"
                    )
                self.optimizer.step()
                grad_norms.append(grad_norm)
        self.lr_scheduler.step()
        self.num_updates += 1
        out = model_utils.mean_of_device_metrics(metrics)
        out["actor/grad_norm"] = sum(grad_norms) / len(grad_norms)
        out["actor/lr"] = self.lr_scheduler.get_last_lr()[0]
        out["perf/padding_ratio"] = num_computed / max(num_real, 1)  # tokens computed / real tokens
        out["perf/update_num_tokens"] = float(num_real)  # real tokens trained on this rank (all epochs)
        if self.device.type == "cuda":
            out["perf/max_memory_allocated_gb"] = torch.cuda.max_memory_allocated(self.device) / 1e9
            torch.cuda.reset_peak_memory_stats(self.device)
        return out

    def named_weights(self):
        """(HF name, full tensor) parameter pairs in the serving dtype (`model.dtype`), gathered
        shard by shard; fp32 master weights are cast into buffers kept across syncs."""
        return model_utils.full_named_parameters(self.model, self.serving_dtype, self.cast_buffers)

    # ---- weight sync: every rank gathers its shards; rank 0 sends --------------------------
    # (cuda_ipc with several ranks: every rank exports its own GPU's copy, rank 0 sends them all,
    # because each vLLM worker may only open memory on its own GPU)
    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def connect_rollout(self, rollout_handles: list, transport: str, sync_cfg) -> None:
        """Build the sender(s); broadcast transports form their group with the engines here."""
        self.sends_from_every_rank = transport == "cuda_ipc" and self.world_size > 1
        if self.rank != 0 and not self.sends_from_every_rank:
            return
        import ray

        from rlsys.weight_sync import make_sender

        def call_receivers(method: str, *args) -> list:
            refs = [h.rollout_call_engine_workers.remote(method, *args) for h in rollout_handles]
            return [r for per_rank in ray.get(refs, timeout=sync_cfg.timeout_s) for r in per_rank]

        self.call_receivers = call_receivers if self.rank == 0 else None
        self.sender = make_sender(transport, sync_cfg.bucket_size_mb, sync_cfg.verify, sync_cfg.timeout_s,
                                  host=ray.util.get_node_ip_address(), load_mode=sync_cfg.load_mode)
        if self.sends_from_every_rank:
            import torch.distributed as dist

            def exchange(obj) -> list:
                parts = [None] * self.world_size
                dist.all_gather_object(parts, obj)
                return parts

            self.sender.exchange, self.sender.barrier = exchange, dist.barrier
            self.sender.zero_copy = False  # gathered full tensors are new memory at every sync
        if self.rank == 0:
            self.sender.connect(call_receivers)

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def sync_weights(self, corrupt_param_for_test: str | None = None):
        named = list(self.named_weights())
        if self.rank != 0 and not getattr(self, "sends_from_every_rank", False):
            return None
        report = self.sender.sync(named, self.call_receivers, corrupt_param_for_test=corrupt_param_for_test)
        if self.rank != 0:
            return None
        return {"weight_sync/num_bytes": report.num_bytes, "weight_sync/num_buckets": report.num_buckets,
                "weight_sync/sync_s": report.sync_s}

    # ---- checkpoint: every rank writes its shard; rank 0 also the HF directory --------------
    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def save_checkpoint(self, path: str) -> None:
        """Model, optimizer, lr scheduler under `path`, and `path/hf` for transformers / vLLM."""
        from pathlib import Path

        from rlsys.workers import checkpoint_io as checkpoint

        checkpoint.save_train_state(Path(path), self.model, self.optimizer, self.lr_scheduler,
                                    {"num_updates": self.num_updates}, self.rank)
        checkpoint.save_hf_model(Path(path) / "hf", self.model, self.model_path, self.rank)

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def load_checkpoint(self, path: str) -> None:
        from pathlib import Path

        from rlsys.workers import checkpoint_io as checkpoint

        extra = checkpoint.load_train_state(Path(path), self.model, self.optimizer, self.lr_scheduler)
        self.num_updates = extra["num_updates"]

"""Per-step metrics with verl's names, and the run's writers (console, metrics.jsonl, tensorboard)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from rlsys.protocol import DataProto
from rlsys.rollout.agent.metrics import multi_turn_metrics


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> float:
    return float((x * mask).sum() / mask.sum().clamp(min=1))


def compute_data_metrics(batch: DataProto, use_critic: bool) -> dict[str, float]:
    b = batch.batch
    mask = b["response_mask"].float()
    scores = b["token_level_scores"].sum(-1)
    rewards = b["token_level_rewards"].sum(-1)
    lengths = mask.sum(-1)
    metrics = {
        "critic/score/mean": float(scores.mean()),
        "critic/score/max": float(scores.max()),
        "critic/score/min": float(scores.min()),
        "critic/rewards/mean": float(rewards.mean()),
        "critic/advantages/mean": _masked_mean(b["advantages"], mask),
        "critic/advantages/max": float(b["advantages"][mask.bool()].max()),
        "critic/advantages/min": float(b["advantages"][mask.bool()].min()),
        "critic/returns/mean": _masked_mean(b["returns"], mask),
        "response_length/mean": float(lengths.mean()),
        "response_length/max": float(lengths.max()),
        "response_length/clip_ratio": float((lengths == mask.shape[1]).float().mean()),
        "prompt_length/mean": float(b["attention_mask"][:, : -mask.shape[1]].sum(-1).float().mean()),
    }
    if "reward_errors" in b.keys():
        metrics["reward/num_errors"] = float(b["reward_errors"].sum())
    metrics.update(multi_turn_metrics(batch))  # {} unless the rollout was multi-turn
    if use_critic:
        metrics["critic/values/mean"] = _masked_mean(b["values"], mask)
    return metrics


def mean_of_rank_metrics(per_rank: list[dict]) -> dict[str, float]:
    keys = per_rank[0].keys()
    return {k: sum(d[k] for d in per_rank) / len(per_rank) for k in keys}


class MetricsWriter:
    """Writes one JSON object per step to metrics.jsonl, and optionally to tensorboard."""

    def __init__(self, run_dir: Path, loggers: list[str], project: str = "rlsys"):
        unknown = set(loggers) - {"console", "jsonl", "tensorboard", "wandb"}
        if unknown:
            raise ValueError(f"trainer.logger has unknown entries {sorted(unknown)}; "
                             "valid: console, jsonl, tensorboard, wandb")
        self.loggers = loggers
        self.jsonl = open(run_dir / "metrics.jsonl", "a") if "jsonl" in loggers else None
        self.tb = None
        if "tensorboard" in loggers:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        self.wandb = None
        if "wandb" in loggers:
            try:
                import wandb
            except ImportError as exc:
                raise ValueError("trainer.logger includes wandb but the wandb package is not installed") from exc
            # WANDB_MODE=offline is read by wandb itself; runs then sync later with `wandb sync`.
            self.wandb = wandb.init(project=project, dir=str(run_dir), name=run_dir.name)

    def log(self, step: int, metrics: dict) -> None:
        for k, v in metrics.items():
            if isinstance(v, float) and not math.isfinite(v):
                raise FloatingPointError(f"step {step}: metric {k} is {v}")
        if self.jsonl:
            self.jsonl.write(json.dumps({"step": step, **metrics}) + "\n")
            self.jsonl.flush()
        if self.tb:
            for k, v in metrics.items():
                self.tb.add_scalar(k, v, step)
        if self.wandb:
            self.wandb.log(metrics, step=step)
        if "console" in self.loggers and "val/score" in metrics:
            from tqdm import tqdm

            tqdm.write(f"step {step}: val/score={metrics['val/score']:.4f}" + "".join(
                f" {k}={metrics[k]:.4g}" for k in ("critic/score/mean", "actor/pg_loss", "timing_s/step", "val/multi_turn/tool_call_rate",
                          "val/multi_turn/turns_mean") if k in metrics))

    def close(self) -> None:
        if self.jsonl:
            self.jsonl.close()
        if self.tb:
            self.tb.close()
        if self.wandb:
            self.wandb.finish()

"""Derived batch shapes: computed once at start, printed as one table, never rewritten.

verl's most common confusion is which unit a batch size is counted in. Here the config
counts prompts only in `data.train_batch_size`; every other size is in sequences
(one prompt x one sample). A size that does not divide fails at start with the keys
involved and the nearest valid values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class BatchShapes:
    prompts_per_step: int
    samples_per_prompt: int
    sequences_per_step: int
    num_ranks: int
    sequences_per_rank: int
    mini_batch_size: int
    mini_batches_per_epoch: int
    micro_batch_size_per_rank: int
    grad_accum_steps: int
    max_tokens_per_micro_batch: Optional[int] = None  # token-budget micro-batches; None: fixed size

    def table(self) -> str:
        rows = [
            ("prompts per step (data.train_batch_size)", self.prompts_per_step),
            ("samples per prompt (rollout.n)", self.samples_per_prompt),
            ("sequences per step", self.sequences_per_step),
            ("training ranks", self.num_ranks),
            ("sequences per rank per step", self.sequences_per_rank),
            ("sequences per mini-batch (actor.ppo_mini_batch_size)", self.mini_batch_size),
            ("mini-batches (optimizer steps) per epoch", self.mini_batches_per_epoch),
            ("micro-batch per rank (actor.micro_batch_size_per_rank)", self.micro_batch_size_per_rank),
            ("gradient-accumulation steps per mini-batch", self.grad_accum_steps),
        ]
        if self.max_tokens_per_micro_batch is not None:  # micro-batches are cut by tokens instead
            rows[-2:] = [("micro-batch token budget per rank (actor.max_tokens_per_micro_batch)",
                          self.max_tokens_per_micro_batch),
                         ("gradient-accumulation steps per mini-batch", "by length")]
        width = max(len(name) for name, _ in rows)
        lines = [f"{'derived batch shapes':<{width}} | value", "-" * (width + 9)]
        lines += [f"{name:<{width}} | {value}" for name, value in rows]
        return "\n".join(lines)


def _divisors_near(total: int, target: int, multiple_of: int = 1) -> str:
    valid = [d for d in range(1, total + 1) if total % d == 0 and d % multiple_of == 0]
    if not valid:
        return "none"
    best = sorted(valid, key=lambda d: (abs(d - target), d))[:3]
    return ", ".join(str(v) for v in sorted(best))


def _require_divides(total: int, total_key: str, part: int, part_key: str, multiple_of: int = 1) -> None:
    if part <= 0 or total % part != 0 or part % multiple_of != 0:
        extra = f" and be a multiple of {multiple_of}" if multiple_of > 1 else ""
        raise ValueError(
            f"{part_key}={part} must divide {total_key}={total}{extra}; "
            f"nearest valid values of {part_key}: {_divisors_near(total, part, multiple_of)}"
        )


def derive_batch_shapes(
    prompts_per_step: int,
    samples_per_prompt: int,
    num_ranks: int,
    mini_batch_size: int,
    micro_batch_size_per_rank: int,
    prefix: str = "actor",
    max_tokens_per_micro_batch: Optional[int] = None,
) -> BatchShapes:
    """Check divisibility and derive the per-rank, per-mini-batch shapes.

    sequences_per_step = prompts_per_step * samples_per_prompt
    grad_accum_steps   = mini_batch_size / (num_ranks * micro_batch_size_per_rank)
    (with a token budget the micro-batches are cut by length instead; the table says so)
    """
    if max_tokens_per_micro_batch is not None and max_tokens_per_micro_batch <= 0:
        raise ValueError(f"{prefix}.max_tokens_per_micro_batch={max_tokens_per_micro_batch} must be positive "
                         "(or null for fixed micro-batches)")
    if prompts_per_step <= 0:
        raise ValueError(f"data.train_batch_size={prompts_per_step} must be positive")
    if samples_per_prompt <= 0:
        raise ValueError(f"rollout.n={samples_per_prompt} must be positive")
    sequences = prompts_per_step * samples_per_prompt
    total_key = "data.train_batch_size * rollout.n"
    _require_divides(sequences, total_key, num_ranks, "number of training ranks (trainer.n_devices_per_node * trainer.nnodes)")
    _require_divides(sequences, total_key, mini_batch_size, f"{prefix}.ppo_mini_batch_size", multiple_of=num_ranks)
    per_rank_mini = mini_batch_size // num_ranks
    if micro_batch_size_per_rank <= 0 or per_rank_mini % micro_batch_size_per_rank != 0:
        raise ValueError(
            f"{prefix}.micro_batch_size_per_rank={micro_batch_size_per_rank} must divide the per-rank mini-batch "
            f"({prefix}.ppo_mini_batch_size / ranks = {mini_batch_size} / {num_ranks} = {per_rank_mini}); "
            f"nearest valid values: {_divisors_near(per_rank_mini, micro_batch_size_per_rank)}"
        )
    return BatchShapes(
        prompts_per_step=prompts_per_step,
        samples_per_prompt=samples_per_prompt,
        sequences_per_step=sequences,
        num_ranks=num_ranks,
        sequences_per_rank=sequences // num_ranks,
        mini_batch_size=mini_batch_size,
        mini_batches_per_epoch=sequences // mini_batch_size,
        micro_batch_size_per_rank=micro_batch_size_per_rank,
        grad_accum_steps=per_rank_mini // micro_batch_size_per_rank,
        max_tokens_per_micro_batch=max_tokens_per_micro_batch,
    )

"""Supervised warm-up that turns the random tiny Qwen2 into the RL base model, cached on disk.

The base model answers two-digit addition ("12+7=" -> "19<eos>") but, on problems that
need a carry, usually "forgets to carry" (58+67 -> "15" instead of "125"). It is made in
two supervised phases: first clean labels until the model adds well, then labels where each
answer is replaced, with probability `carryless_prob`, by the carry-less digit-wise sum.
The result samples both answers (the correct one with probability about
1 - carryless_prob on carry problems) and greedily picks mostly the carry-less one, so
greedy validation accuracy starts low and a verifiable reward has a clear, reachable
direction to push: RL headroom by construction, independent of optimisation luck.

`ensure_base_model()` trains it once (single process, CPU, AdamW) in a temporary
directory, renames that into `$RLSYS_CACHE/tiny-arith-v1-seed<seed>` (default cache root
`~/.cache/rlsys`) and returns the cached path on later calls.

    python scripts/make_tiny_model.py            # build (or find) the cached base model
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from rlsys.models.tiny import build_tiny_model, save_model_dir
from rlsys.tasks.arithmetic import (
    arithmetic_reward,
    format_prompt,
    make_arithmetic_dataset,
    solve,
    split_problems,
)

MODEL_NAME = "tiny-arith-v1"
DONE_FILE = "rlsys_warmup.json"  # written last: its presence marks a complete model directory


@dataclass(frozen=True)
class WarmupConfig:
    """The supervised warm-up recipe (defaults = the cached base model).

    A cached model is reused only if its recorded recipe equals this one.
    """

    num_clean_steps: int = 800  # phase 1: correct labels
    num_noisy_steps: int = 800  # phase 2: carry-less labels with probability carryless_prob
    carryless_prob: float = 0.75
    batch_size: int = 128
    lr: float = 1e-3
    warmup_steps: int = 50  # linear warm-up, then cosine decay to min_lr_ratio * lr
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    num_val_problems: int = 128

    @property
    def num_steps(self) -> int:
        return self.num_clean_steps + self.num_noisy_steps


def default_cache_root() -> Path:
    """$RLSYS_CACHE if set, else ~/.cache/rlsys."""
    return Path(os.environ.get("RLSYS_CACHE") or Path.home() / ".cache" / "rlsys")


def carryless_sum(a: int, b: int) -> int:
    """Digit-wise sum with every carry dropped: digit_k = (a_k + b_k) mod 10, e.g. 58, 67 -> 15."""
    total, place = 0, 1
    while a or b:
        total += ((a % 10 + b % 10) % 10) * place
        a, b, place = a // 10, b // 10, place * 10
    return total


def sft_rows(problems: list[tuple], carryless_prob: float, rng: np.random.Generator) -> list[dict]:
    """Rows {"prompt", "ground_truth"} for addition problems; each label is the carry-less sum
    with probability `carryless_prob` (one coin per row), else the true answer."""
    rows = []
    for a, op, b in problems:
        if op != "+":
            raise ValueError(f"warm-up problem {a}{op}{b}: only '+' problems are supported")
        noisy = carryless_prob > 0 and rng.random() < carryless_prob
        answer = str(carryless_sum(a, b)) if noisy else solve(a, op, b)
        rows.append({"prompt": format_prompt(a, op, b), "ground_truth": answer})
    return rows


def encode_sft_batch(rows: list[dict], tokenizer) -> dict[str, torch.Tensor]:
    """Right-padded `prompt + ground_truth + eos` sequences; labels are -100 on prompt and pad.

    Returns input_ids, attention_mask, labels, each (batch, max_len) int64.
    """
    seqs, labels = [], []
    for row in rows:
        prompt = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
        answer = tokenizer(row["ground_truth"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        seqs.append(prompt + answer)
        labels.append([-100] * len(prompt) + answer)
    max_len = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), max_len), tokenizer.pad_token_id, dtype=torch.long)
    label_ids = torch.full((len(seqs), max_len), -100, dtype=torch.long)
    mask = torch.zeros((len(seqs), max_len), dtype=torch.long)
    for i, (seq, lab) in enumerate(zip(seqs, labels)):
        input_ids[i, : len(seq)] = torch.tensor(seq)
        label_ids[i, : len(lab)] = torch.tensor(lab)
        mask[i, : len(seq)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": label_ids}


def lr_factor(step: int, config: WarmupConfig) -> float:
    """Multiplier of config.lr at optimizer step `step` (0-based): linear warm-up over
    warmup_steps, then cosine from 1 to min_lr_ratio at num_steps."""
    warm = min(1.0, (step + 1) / max(1, config.warmup_steps))
    progress = min(step, config.num_steps) / max(1, config.num_steps)
    return warm * (config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def run_sft(model, tokenizer, problems: list[tuple], config: WarmupConfig, seed: int) -> list[float]:
    """config.num_steps AdamW steps of next-token loss on answer tokens; returns per-step losses.

    Each step draws batch_size distinct problems with a numpy RNG seeded by `seed`; steps
    after num_clean_steps use carry-less labels with probability carryless_prob.
    """
    if len(problems) < config.batch_size:
        raise ValueError(f"warm-up has {len(problems)} problems < batch_size={config.batch_size}")
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config))
    losses = []
    model.train()
    for step in range(config.num_steps):
        picked = rng.choice(len(problems), size=config.batch_size, replace=False)
        noise = config.carryless_prob if step >= config.num_clean_steps else 0.0
        batch = encode_sft_batch(sft_rows([problems[i] for i in picked], noise, rng), tokenizer)
        loss = model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


@torch.no_grad()
def greedy_responses(model, tokenizer, prompts: list[str], max_new_tokens: int = 6) -> list[str]:
    """Greedy completions (special tokens stripped), decoding each prompt without padding.

    Prompts are grouped by token length so no batch needs padding or position shifts;
    generation stops at EOS. Recomputes the full sequence each step (sequences are short).
    """
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    responses: list[str] = [""] * len(prompts)
    for length in sorted({len(e) for e in encoded}):
        idx = [i for i, e in enumerate(encoded) if len(e) == length]
        ids = torch.tensor([encoded[i] for i in idx], dtype=torch.long)
        done = torch.zeros(len(idx), dtype=torch.bool)
        generated = []
        for _ in range(max_new_tokens):
            next_ids = model(input_ids=ids).logits[:, -1].argmax(-1)
            next_ids = torch.where(done, torch.full_like(next_ids, tokenizer.pad_token_id), next_ids)
            generated.append(next_ids)
            done |= next_ids == tokenizer.eos_token_id
            ids = torch.cat([ids, next_ids[:, None]], dim=1)
            if bool(done.all()):
                break
        out = torch.stack(generated, dim=1).tolist()
        for row, i in enumerate(idx):
            responses[i] = tokenizer.decode(out[row], skip_special_tokens=True)
    return responses


def greedy_accuracy(model, tokenizer, rows: list[dict]) -> float:
    """Mean arithmetic_reward of greedy responses over `rows`."""
    responses = greedy_responses(model, tokenizer, [r["prompt"] for r in rows])
    return float(np.mean([arithmetic_reward(text, r["ground_truth"]) for text, r in zip(responses, rows)]))


def _tail_mean(values: list[float], tail: int = 20) -> float | None:
    return float(np.mean(values[-tail:])) if values else None


@contextmanager
def single_torch_thread():
    """Run torch CPU ops on one thread inside the block, restoring the count after.

    The tiny model's matrices are too small to gain much from more threads, while two
    2-thread torch processes on a 2-core machine can slow each other down more than tenfold
    (OpenMP workers spin waiting for each other); one thread keeps the warm-up predictable.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def train_base_model(out_dir: str | Path, seed: int = 0, config: WarmupConfig = WarmupConfig()) -> dict:
    """Build the tiny model (init seed `seed`), warm it up on the whole train split (one torch
    thread), save it to `out_dir` and return the stats also written there as DONE_FILE (last)."""
    start_s = time.perf_counter()
    model, tokenizer = build_tiny_model(seed)
    with single_torch_thread():
        losses = run_sft(model, tokenizer, split_problems("train"), config, seed)
    warmup_time_s = time.perf_counter() - start_s
    val_rows = make_arithmetic_dataset(config.num_val_problems, seed, "val")
    stats = {
        "model": MODEL_NAME,
        "seed": seed,
        "warmup": asdict(config),
        "first_loss": losses[0],
        "clean_phase_final_loss": _tail_mean(losses[: config.num_clean_steps]),
        "final_loss": _tail_mean(losses),
        "val_greedy_accuracy": greedy_accuracy(model, tokenizer, val_rows),
        "num_val_problems": len(val_rows),
        "warmup_time_s": round(warmup_time_s, 2),
        "torch_threads": 1,
    }
    save_model_dir(model, tokenizer, out_dir)
    (Path(out_dir) / DONE_FILE).write_text(json.dumps(stats, indent=2))
    return stats


def is_complete(model_dir: Path, config: WarmupConfig, seed: int) -> bool:
    """True if `model_dir` holds a finished warm-up made with this exact recipe and seed."""
    try:
        stats = json.loads((model_dir / DONE_FILE).read_text())
    except (OSError, ValueError):
        return False
    return stats.get("warmup") == asdict(config) and stats.get("seed") == seed and stats.get("model") == MODEL_NAME


def _remove_stale_temporaries(root: Path, name: str, max_age_s: float = 3600.0) -> None:
    """Delete temporary build directories of `name` left by killed builders (older than max_age_s)."""
    for leftover in root.glob(f".{name}.*"):
        if time.time() - leftover.stat().st_mtime > max_age_s:
            shutil.rmtree(leftover, ignore_errors=True)


def ensure_base_model(
    cache_dir: str | Path | None = None, seed: int = 0, config: WarmupConfig | None = None
) -> Path:
    """Path of the warmed-up base model `<cache_dir>/tiny-arith-v1-seed<seed>`, training it
    first (1600 small steps on one torch thread: ~75 s on an idle CPU) unless a complete copy made
    with the same recipe is there. cache_dir defaults to default_cache_root(); config to
    WarmupConfig() (tests pass a tiny one).

    Training happens in a temporary sibling directory renamed into place, so a crash never
    leaves a half-written model; if another process finished first, its copy is kept.
    """
    config = config or WarmupConfig()
    root = Path(cache_dir) if cache_dir is not None else default_cache_root()
    target = root / f"{MODEL_NAME}-seed{seed}"
    if is_complete(target, config, seed):
        return target
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(root, target.name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=root))
    try:
        print(f"rlsys: building {target} (supervised warm-up, once)", flush=True)
        stats = train_base_model(tmp, seed, config)
        tmp.chmod(0o755)
        if target.exists() and not is_complete(target, config, seed):
            shutil.rmtree(target)  # partial or older-recipe leftover
        try:
            os.rename(tmp, target)
        except OSError:
            if not is_complete(target, config, seed):
                raise
        print(f"rlsys: warm-up took {stats['warmup_time_s']} s; base model greedy val accuracy "
              f"{stats['val_greedy_accuracy']:.3f}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target

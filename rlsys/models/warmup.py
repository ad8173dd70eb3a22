"""Supervised warm-up that turns the random tiny Qwen2 into the RL base model, cached on disk.

`ensure_base_model()` returns a directory holding a tiny Qwen2 that has seen a short,
deliberately incomplete supervised pass over two-digit addition ("12+7=" -> "19<eos>"):
it has learnt the answer format and part of the arithmetic, so greedy validation accuracy
starts low but well above zero, and RL has headroom. The first call trains it (a few
hundred AdamW steps, single process on CPU) and writes it atomically (temporary directory,
then rename) under `$RLSYS_CACHE` (default `~/.cache/rlsys`); later calls return the cache.

    python scripts/make_tiny_model.py            # build (or find) the cached base model
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from rlsys.models.tiny import build_tiny_model, save_model_dir
from rlsys.tasks.arithmetic import arithmetic_reward, make_arithmetic_dataset

MODEL_NAME = "tiny-arith-v1"  # bump when the recipe below changes, so stale caches are ignored
DONE_FILE = "rlsys_warmup.json"  # written last: its presence marks a complete model directory


@dataclass(frozen=True)
class WarmupConfig:
    """The supervised warm-up recipe (defaults = the cached base model)."""

    num_steps: int = 300
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.0
    num_train_problems: int = 9000  # all of the train split of two-digit addition
    num_val_problems: int = 128


def default_cache_root() -> Path:
    """$RLSYS_CACHE if set, else ~/.cache/rlsys."""
    return Path(os.environ.get("RLSYS_CACHE") or Path.home() / ".cache" / "rlsys")


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


def run_sft(model, tokenizer, rows: list[dict], config: WarmupConfig, seed: int) -> list[float]:
    """`config.num_steps` AdamW steps of next-token loss on answer tokens; returns per-step losses.

    Batches are drawn by a numpy RNG seeded with `seed` (reshuffled each epoch over `rows`).
    The learning rate decays linearly from config.lr to 0.1 * config.lr.
    """
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 1.0 - 0.9 * step / max(1, config.num_steps)
    )
    order, position, losses = rng.permutation(len(rows)), 0, []
    model.train()
    for _ in range(config.num_steps):
        if position + config.batch_size > len(rows):
            order, position = rng.permutation(len(rows)), 0
        batch = encode_sft_batch([rows[i] for i in order[position : position + config.batch_size]], tokenizer)
        position += config.batch_size
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


def train_base_model(out_dir: str | Path, seed: int = 0, config: WarmupConfig = WarmupConfig()) -> dict:
    """Build the tiny model, warm it up, save it to `out_dir`; return the stats written to DONE_FILE."""
    start_s = time.perf_counter()
    model, tokenizer = build_tiny_model(seed)
    train_rows = make_arithmetic_dataset(config.num_train_problems, seed, "train")
    val_rows = make_arithmetic_dataset(config.num_val_problems, seed, "val")
    torch.manual_seed(seed)
    losses = run_sft(model, tokenizer, train_rows, config, seed)
    train_s = time.perf_counter() - start_s
    stats = {
        "model": MODEL_NAME,
        "seed": seed,
        "warmup": asdict(config),
        "first_loss": losses[0],
        "final_loss": float(np.mean(losses[-10:])),
        "val_greedy_accuracy": greedy_accuracy(model, tokenizer, val_rows),
        "num_val_problems": len(val_rows),
        "warmup_time_s": round(train_s, 2),
        "torch_threads": torch.get_num_threads(),
    }
    save_model_dir(model, tokenizer, out_dir)
    (Path(out_dir) / DONE_FILE).write_text(json.dumps(stats, indent=2))
    return stats


def ensure_base_model(cache_dir: str | Path | None = None, seed: int = 0) -> Path:
    """Path of the warmed-up base model `<cache_dir>/tiny-arith-v1-seed<seed>`, training it
    first if no complete copy exists. cache_dir defaults to default_cache_root().

    A complete copy has DONE_FILE, written last. Training happens in a temporary sibling
    directory that is renamed into place, so a crash never leaves a half-written model and
    a concurrent builder's finished copy wins.
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache_root()
    target = root / f"{MODEL_NAME}-seed{seed}"
    if (target / DONE_FILE).exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    if target.exists():  # incomplete leftover from an older, non-atomic writer
        shutil.rmtree(target, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=root))
    try:
        stats = train_base_model(tmp, seed)
        print(f"rlsys: built {target.name} in {stats['warmup_time_s']} s, "
              f"val greedy accuracy {stats['val_greedy_accuracy']:.3f}", flush=True)
        os.rename(tmp, target)
    except OSError:
        if not (target / DONE_FILE).exists():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target

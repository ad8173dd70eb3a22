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

The same two phases scale to any shape of rlsys.models.shapes on the character vocabulary:
`train_base_model(out, shape="arith-100m", device="cuda")` builds the ~100M-parameter base
model (fp32 master weights, bf16 autocast compute on CUDA, that shape's recipe from
SHAPE_WARMUP_CONFIGS; not cached). The summary it returns measures the headroom: greedy
accuracy after each phase, the carry-less rate of greedy answers on carry problems, and how
often sampling at temperature 1 finds the answer greedy misses.

    python scripts/make_tiny_model.py            # build (or find) the cached base model
    python scripts/make_tiny_model.py --out /tmp/arith100m --shape arith-100m --device cuda
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from rlsys.models.shapes import qwen2_shape
from rlsys.models.tiny import build_tiny_model, save_model_dir
from rlsys.tasks.arithmetic import (
    arithmetic_reward,
    extract_answer,
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


# Recipes of shapes that the tiny model's does not suit; any other shape uses WarmupConfig().
SHAPE_WARMUP_CONFIGS: dict[str, WarmupConfig] = {
    # 1e-3 is the tiny model's rate; a 12-layer, 768-wide model wants the usual ~3e-4. Its GRPO
    # runs at lr 1e-5, so carry problems start nearer the greedy flip (correct answer sampled
    # ~40% of the time, not ~25%). Measured on one H200 (seed 0, 113 s): greedy val accuracy
    # 0.99 after the clean phase, 0.34 at the end (90% of carry problems answered carry-less),
    # sampled accuracy 0.54, pass@8 on greedily wrong problems 0.96.
    "arith-100m": WarmupConfig(lr=3e-4, carryless_prob=0.6),
}


def warmup_config_for(shape: str | None) -> WarmupConfig:
    """The warm-up recipe of `shape` (None: the embedded tiny model)."""
    return SHAPE_WARMUP_CONFIGS.get(shape, WarmupConfig()) if shape else WarmupConfig()


def model_name(shape: str | None) -> str:
    """Name recorded in DONE_FILE: MODEL_NAME for the tiny model, "arith-v1-<shape>" otherwise."""
    return MODEL_NAME if shape is None else f"arith-v1-{shape}"


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


def run_sft(model, tokenizer, problems: list[tuple], config: WarmupConfig, seed: int,
            on_clean_phase_end: Callable[[], None] | None = None) -> list[float]:
    """config.num_steps AdamW steps of next-token loss on answer tokens; returns per-step losses.

    Each step draws batch_size distinct problems with a numpy RNG seeded by `seed`; steps
    after num_clean_steps use carry-less labels with probability carryless_prob. Runs on the
    model's device: parameters and optimizer state stay as they are (fp32), and on CUDA the
    forward runs under bf16 autocast. `on_clean_phase_end()` is called in eval mode after the
    last clean step (if there is one).
    """
    if len(problems) < config.batch_size:
        raise ValueError(f"warm-up has {len(problems)} problems < batch_size={config.batch_size}")
    device = next(model.parameters()).device
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                  fused=True if device.type == "cuda" else None)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config))
    losses = []  # device tensors, read once at the end so CUDA steps are not synchronised
    model.train()
    for step in range(config.num_steps):
        picked = rng.choice(len(problems), size=config.batch_size, replace=False)
        noise = config.carryless_prob if step >= config.num_clean_steps else 0.0
        batch = encode_sft_batch(sft_rows([problems[i] for i in picked], noise, rng), tokenizer)
        batch = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.detach().float())
        if step + 1 == config.num_clean_steps and on_clean_phase_end is not None:
            model.eval()
            on_clean_phase_end()
            model.train()
    model.eval()
    return torch.stack(losses).tolist() if losses else []


@torch.no_grad()
def generate_responses(model, tokenizer, prompts: list[str], max_new_tokens: int = 6,
                       temperature: float = 0.0, generator: torch.Generator | None = None) -> list[str]:
    """Completions (special tokens stripped), decoding each prompt without padding: greedy at
    temperature 0, else sampled from softmax(logits / temperature) with `generator`.

    Prompts are grouped by token length so no batch needs padding or position shifts;
    generation stops at EOS. Recomputes the full sequence each step (sequences are short).
    """
    device = next(model.parameters()).device
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    responses: list[str] = [""] * len(prompts)
    for length in sorted({len(e) for e in encoded}):
        idx = [i for i, e in enumerate(encoded) if len(e) == length]
        ids = torch.tensor([encoded[i] for i in idx], dtype=torch.long, device=device)
        done = torch.zeros(len(idx), dtype=torch.bool, device=device)
        generated = []
        for _ in range(max_new_tokens):
            logits = model(input_ids=ids).logits[:, -1].float()
            if temperature > 0:
                probs = torch.softmax(logits / temperature, dim=-1)
                next_ids = torch.multinomial(probs, 1, generator=generator)[:, 0]
            else:
                next_ids = logits.argmax(-1)
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


def greedy_responses(model, tokenizer, prompts: list[str], max_new_tokens: int = 6) -> list[str]:
    """Greedy completions of `prompts` (generate_responses at temperature 0)."""
    return generate_responses(model, tokenizer, prompts, max_new_tokens)


def greedy_accuracy(model, tokenizer, rows: list[dict]) -> float:
    """Mean arithmetic_reward of greedy responses over `rows`."""
    responses = greedy_responses(model, tokenizer, [r["prompt"] for r in rows])
    return float(np.mean([arithmetic_reward(text, r["ground_truth"]) for text, r in zip(responses, rows)]))


def _operands(row: dict) -> tuple[int, int]:
    a, b = row["prompt"].rstrip("=").split("+")
    return int(a), int(b)


def headroom_stats(model, tokenizer, rows: list[dict], seed: int, num_samples: int = 4) -> dict:
    """What RL can gain on addition `rows`: greedy accuracy; on carry problems, how often the
    greedy answer is the carry-less sum; accuracy of samples at temperature 1 (num_samples per
    row); and, over rows greedy gets wrong, how often one of those samples is right (pass@k)."""
    prompts = [r["prompt"] for r in rows]
    greedy = greedy_responses(model, tokenizer, prompts)
    greedy_right = np.array([arithmetic_reward(t, r["ground_truth"]) for t, r in zip(greedy, rows)])
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    sampled = generate_responses(model, tokenizer, [p for p in prompts for _ in range(num_samples)],
                                 temperature=1.0, generator=generator)
    sampled_right = np.array([arithmetic_reward(t, rows[k // num_samples]["ground_truth"])
                              for k, t in enumerate(sampled)]).reshape(len(rows), num_samples)
    carry = [i for i, r in enumerate(rows) if str(carryless_sum(*_operands(r))) != r["ground_truth"]]
    carryless = [extract_answer(greedy[i]) == str(carryless_sum(*_operands(rows[i]))) for i in carry]
    wrong = greedy_right < 1
    pass_at_k = float(sampled_right[wrong].max(1).mean()) if wrong.any() else None
    return {
        "val_greedy_accuracy": float(greedy_right.mean()),
        "val_carry_fraction": len(carry) / len(rows),
        "val_greedy_carryless_rate_on_carry": float(np.mean(carryless)) if carry else None,
        "val_sampled_accuracy": float(sampled_right.mean()),
        f"val_pass_at_{num_samples}_where_greedy_wrong": pass_at_k,
    }


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


def train_base_model(out_dir: str | Path, seed: int = 0, config: WarmupConfig | None = None,
                     shape: str | None = None, device: str = "cpu") -> dict:
    """Build the model (init seed `seed`; the embedded tiny model, or `shape` of
    rlsys.models.shapes), warm it up on the whole train split on `device` (CPU: one torch
    thread; CUDA: bf16 autocast, fp32 weights), save it to `out_dir` in fp32 and return the
    stats also written there as DONE_FILE (last). config defaults to warmup_config_for(shape)."""
    config = config or warmup_config_for(shape)
    device = torch.device(device)
    start_s = time.perf_counter()
    model, tokenizer = build_tiny_model(seed, **({} if shape is None else qwen2_shape(shape)))
    model.to(device)
    val_rows = make_arithmetic_dataset(config.num_val_problems, seed, "val")
    clean_phase = {}

    def measure_clean_phase() -> None:
        clean_phase["val_greedy_accuracy"] = greedy_accuracy(model, tokenizer, val_rows)

    with single_torch_thread() if device.type == "cpu" else nullcontext():
        losses = run_sft(model, tokenizer, split_problems("train"), config, seed, measure_clean_phase)
        warmup_time_s = time.perf_counter() - start_s
        headroom = headroom_stats(model, tokenizer, val_rows, seed)
    stats = {
        "model": model_name(shape),
        "seed": seed,
        "warmup": asdict(config),
        "shape": shape,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "device": str(device),
        "compute_dtype": "bfloat16" if device.type == "cuda" else "float32",
        "first_loss": losses[0],
        "clean_phase_final_loss": _tail_mean(losses[: config.num_clean_steps]),
        "final_loss": _tail_mean(losses),
        "val_greedy_accuracy_after_clean_phase": clean_phase.get("val_greedy_accuracy"),
        **headroom,
        "num_val_problems": len(val_rows),
        "warmup_time_s": round(warmup_time_s, 2),
        "torch_threads": 1 if device.type == "cpu" else torch.get_num_threads(),
    }
    save_model_dir(model.to("cpu"), tokenizer, out_dir)
    (Path(out_dir) / DONE_FILE).write_text(json.dumps(stats, indent=2))
    return stats


def is_complete(model_dir: Path, config, seed: int, model_name: str = MODEL_NAME) -> bool:
    """True if `model_dir` holds a finished warm-up of `model_name` made with this exact recipe
    (a dataclass) and seed."""
    try:
        stats = json.loads((model_dir / DONE_FILE).read_text())
    except (OSError, ValueError):
        return False
    return stats.get("warmup") == asdict(config) and stats.get("seed") == seed and stats.get("model") == model_name


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
    stats = build_once(target, lambda d: is_complete(d, config, seed), lambda d: train_base_model(d, seed, config),
                       "supervised warm-up")
    if stats is not None:
        print(f"rlsys: warm-up took {stats['warmup_time_s']} s; base model greedy val accuracy "
              f"{stats['val_greedy_accuracy']:.3f}", flush=True)
    return target


def build_once(target: Path, complete: Callable[[Path], bool], build: Callable[[Path], dict], what: str) -> dict | None:
    """Make the model directory `target` with `build(dir) -> stats` unless `complete(target)`.

    `build` writes into a temporary sibling that is renamed into place, so a crash never leaves
    a half-written model; if another process finished first, its copy is kept. Temporaries of
    killed builders are removed. Returns the stats, or None when `target` was already complete."""
    if complete(target):
        return None
    root = target.parent
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(root, target.name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=root))
    try:
        print(f"rlsys: building {target} ({what}, once)", flush=True)
        stats = build(tmp)
        tmp.chmod(0o755)
        if target.exists() and not complete(target):
            shutil.rmtree(target)  # partial or older-recipe leftover
        try:
            os.rename(tmp, target)
        except OSError:
            if not complete(target):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return stats

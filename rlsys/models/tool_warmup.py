"""Supervised warm-up of the tool task's base model (`model.path=builtin:tiny-calc`), cached on disk.

A fresh tiny Qwen2 (rlsys.models.tiny) learns, from labelled trajectories of the calculator
task (rlsys/envs/calculator.py), two ways to answer "37*58=": with probability `tool_prob`
the tool route "[calc:37*58](2146)2146<eos>" (loss on the call and the copied answer, not on
the observation "(2146)", which the environment writes), otherwise a direct answer
"2146<eos>" that the model cannot compute. Because `tool_prob` is small, greedy decoding
mostly answers directly (and wrongly): validation accuracy starts low, while sampling calls
the tool now and then, and those samples are rewarded. RL has to learn to call the tool and
to copy its result: the call format is taught only weakly.

`ensure_tool_model()` trains once (one torch thread, ~1 min on an idle CPU) in a temporary
directory renamed to `$RLSYS_CACHE/tiny-calc-v1-seed<seed>`; later calls return that path.
`tool_headroom_stats` measures the start point with the real agent loop and the HF engine.

    python -c "from rlsys.models.tool_warmup import ensure_tool_model; print(ensure_tool_model())"
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from rlsys.envs import ToolRegistry, get_parser
from rlsys.envs.calculator import (
    TOOL_NAME,
    calculator,
    calculator_reward,
    format_prompt,
    make_calculator_dataset,
    observation_text,
    split_problems,
    tool_call_text,
)
from rlsys.envs.tool_env import ToolEnv
from rlsys.models.tiny import build_tiny_model, save_model_dir
from rlsys.models.warmup import (DONE_FILE, WarmupConfig, build_once, default_cache_root, is_complete, lr_factor,
                                 single_torch_thread)

MODEL_NAME = "tiny-calc-v1"


@dataclass(frozen=True)
class ToolWarmupConfig:
    """The warm-up recipe; a cached model is reused only if its recorded recipe equals this one."""

    num_steps: int = 600
    tool_prob: float = 0.2  # fraction of labels that take the tool route
    batch_size: int = 128
    lr: float = 1e-3
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    num_val_problems: int = 128

    def schedule(self) -> WarmupConfig:
        """The same linear warm-up + cosine schedule as the arithmetic base model's."""
        return WarmupConfig(num_clean_steps=self.num_steps, num_noisy_steps=0, lr=self.lr,
                            warmup_steps=self.warmup_steps, min_lr_ratio=self.min_lr_ratio)


def trajectory_segments(a: int, b: int, use_tool: bool) -> list[tuple[str, bool]]:
    """(text, trained) pieces of the labelled response to a*b; eos is added by the encoder."""
    answer = str(a * b)
    if not use_tool:
        return [(answer, True)]
    return [(tool_call_text(a, b), True), (observation_text(calculator(f"{a}*{b}")), False), (answer, True)]


def encode_tool_batch(problems: list[tuple[int, int]], use_tool: list[bool], tokenizer) -> dict[str, torch.Tensor]:
    """Right-padded prompt + response + eos; labels -100 on prompt, observation and padding."""
    seqs, labels = [], []
    for (a, b), tool in zip(problems, use_tool):
        ids = tokenizer(format_prompt(a, b), add_special_tokens=False)["input_ids"]
        lab = [-100] * len(ids)
        for text, trained in trajectory_segments(a, b, tool):
            piece = tokenizer(text, add_special_tokens=False)["input_ids"]
            ids, lab = ids + piece, lab + (piece if trained else [-100] * len(piece))
        seqs.append(ids + [tokenizer.eos_token_id])
        labels.append(lab + [tokenizer.eos_token_id])
    width = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), width), tokenizer.pad_token_id, dtype=torch.long)
    label_ids = torch.full((len(seqs), width), -100, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, (seq, lab) in enumerate(zip(seqs, labels)):
        input_ids[i, : len(seq)], label_ids[i, : len(lab)], mask[i, : len(seq)] = (
            torch.tensor(seq), torch.tensor(lab), 1)
    return {"input_ids": input_ids, "attention_mask": mask, "labels": label_ids}


def run_tool_sft(model, tokenizer, config: ToolWarmupConfig, seed: int) -> list[float]:
    """config.num_steps AdamW steps on the train split; per-step losses."""
    problems = split_problems("train")
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0)
    schedule_cfg = config.schedule()
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, schedule_cfg))
    losses = []
    model.train()
    for _ in range(config.num_steps):
        picked = rng.choice(len(problems), size=config.batch_size, replace=False)
        use_tool = list(rng.random(config.batch_size) < config.tool_prob)
        batch = encode_tool_batch([problems[i] for i in picked], use_tool, tokenizer)
        loss = model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


def tool_headroom_stats(model, tokenizer, num_problems: int, seed: int, num_samples: int = 4) -> dict:
    """Greedy and sampled (temperature 1) accuracy and tool-call rate on val problems, through
    the multi-turn agent loop with an in-process HF engine; copy accuracy = accuracy of samples
    that called the tool."""
    from rlsys.rollout.agent.loop import AgentLoop
    from rlsys.rollout.hf_engine import HFEngine

    rows = make_calculator_dataset(num_problems, seed=0, split="val")
    engine = HFEngine(model, tokenizer.pad_token_id, [tokenizer.eos_token_id], tokenizer)
    tools = ToolRegistry({TOOL_NAME: calculator}, timeout_s=5.0)
    parser = get_parser("tag")
    loop = AgentLoop(tokenizer, lambda: ToolEnv(tools, parser), max_turns=2, max_tokens_per_turn=16,
                     response_length=32, max_model_len=64, stop=parser.stop)
    prompts = [tokenizer(r["prompt"], add_special_tokens=False)["input_ids"] for r in rows]
    stats = {}
    for name, sampling in (("greedy", {"n": 1, "temperature": 0.0}),
                           ("sampled", {"n": num_samples, "temperature": 1.0, "seed": seed})):
        tensors, _ = loop.run(engine, prompts, rows, dict(sampling, max_tokens=16))
        texts = tokenizer.batch_decode([r[m.bool()].tolist() for r, m in zip(tensors["responses"],
                                                                             tensors["response_mask"])],
                                       skip_special_tokens=True)
        n = sampling["n"]
        right = np.array([calculator_reward("calculator", t, rows[i // n]["ground_truth"]) for i, t in enumerate(texts)])
        called = tensors["multi_turn_num_observations"].numpy() > 0
        stats[f"val_{name}_accuracy"] = float(right.mean())
        stats[f"val_{name}_tool_call_rate"] = float(called.mean())
        stats[f"val_{name}_accuracy_when_tool_called"] = float(right[called].mean()) if called.any() else None
    return stats


def train_tool_model(out_dir: str | Path, seed: int = 0, config: ToolWarmupConfig | None = None) -> dict:
    """Build, warm up and save the tool model to `out_dir`; the stats are written last (DONE_FILE)."""
    config = config or ToolWarmupConfig()
    start_s = time.perf_counter()
    model, tokenizer = build_tiny_model(seed)
    with single_torch_thread():
        losses = run_tool_sft(model, tokenizer, config, seed)
        warmup_time_s = time.perf_counter() - start_s
        headroom = tool_headroom_stats(model, tokenizer, config.num_val_problems, seed)
    stats = {"model": MODEL_NAME, "seed": seed, "warmup": asdict(config), "first_loss": losses[0],
             "final_loss": float(np.mean(losses[-20:])), **headroom, "warmup_time_s": round(warmup_time_s, 2)}
    save_model_dir(model, tokenizer, out_dir)
    (Path(out_dir) / DONE_FILE).write_text(json.dumps(stats, indent=2))
    return stats


def ensure_tool_model(cache_dir: str | Path | None = None, seed: int = 0,
                      config: ToolWarmupConfig | None = None) -> Path:
    """Path of `<cache_dir>/tiny-calc-v1-seed<seed>`, trained first unless a complete copy of
    this recipe is there (as `rlsys.models.warmup.ensure_base_model`: temporary sibling, rename)."""
    config = config or ToolWarmupConfig()
    root = Path(cache_dir) if cache_dir is not None else default_cache_root()
    target = root / f"{MODEL_NAME}-seed{seed}"
    stats = build_once(target, lambda d: is_complete(d, config, seed, MODEL_NAME),
                       lambda d: train_tool_model(d, seed, config), "tool-use warm-up")
    if stats is not None:
        print(f"rlsys: tool warm-up took {stats['warmup_time_s']} s; greedy val accuracy "
              f"{stats['val_greedy_accuracy']:.3f}, tool-call rate greedy {stats['val_greedy_tool_call_rate']:.3f} "
              f"/ sampled {stats['val_sampled_tool_call_rate']:.3f}", flush=True)
    return target

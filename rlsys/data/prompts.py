"""Prompt datasets and a seeded, shuffling loader that yields DataProto batches.

A row is {"prompt": str, "ground_truth": str, "data_source": str} and optionally
"extra_info": dict. Batches hold `prompt_ids` / `prompt_mask` (batch, max_prompt_length),
left-padded, plus non-tensor `uid`, `ground_truth`, `data_source` (and `extra_info`, {} for
rows without one, when any row has it). The loader's position is a small dict that can be
saved and restored, so a resumed run sees the same batches.
"""

from __future__ import annotations

import numpy as np
import torch

from rlsys.protocol import DataProto


def tokenize_prompts(rows: list[dict], tokenizer, max_prompt_length: int, uid_offset: int = 0) -> DataProto:
    ids = [tokenizer(r["prompt"], add_special_tokens=False)["input_ids"] for r in rows]
    for i, seq in enumerate(ids):
        if len(seq) > max_prompt_length:
            raise ValueError(
                f"prompt row {uid_offset + i} has {len(seq)} tokens > data.max_prompt_length={max_prompt_length}"
            )
    pad = tokenizer.pad_token_id
    prompt_ids = torch.full((len(ids), max_prompt_length), pad, dtype=torch.long)
    prompt_mask = torch.zeros((len(ids), max_prompt_length), dtype=torch.long)
    for i, seq in enumerate(ids):
        if seq:
            prompt_ids[i, -len(seq):] = torch.tensor(seq)
            prompt_mask[i, -len(seq):] = 1
    non_tensors = {
        "uid": np.array([f"p{uid_offset + i}" for i in range(len(rows))], dtype=object),
        "ground_truth": np.array([r["ground_truth"] for r in rows], dtype=object),
        "data_source": np.array([r["data_source"] for r in rows], dtype=object),
    }
    if any("extra_info" in r for r in rows):
        extra_info = np.empty(len(rows), dtype=object)  # 1-D whatever the values hold
        for i, r in enumerate(rows):
            extra_info[i] = r.get("extra_info") or {}
        non_tensors["extra_info"] = extra_info
    return DataProto.from_dict({"prompt_ids": prompt_ids, "prompt_mask": prompt_mask}, non_tensors=non_tensors)


class PromptLoader:
    """Endless seeded shuffling over `rows` in batches of `batch_size` (drop-last per epoch)."""

    def __init__(self, rows: list[dict], tokenizer, batch_size: int, max_prompt_length: int, seed: int):
        if len(rows) < batch_size:
            raise ValueError(f"dataset has {len(rows)} prompts < data.train_batch_size={batch_size}")
        self.rows, self.tokenizer = rows, tokenizer
        self.batch_size, self.max_prompt_length, self.seed = batch_size, max_prompt_length, seed
        self.epoch, self.position = 0, 0

    def _order(self) -> np.ndarray:
        return np.random.default_rng(self.seed + self.epoch).permutation(len(self.rows))

    def next_batch(self) -> DataProto:
        if self.position + self.batch_size > len(self.rows):
            self.epoch, self.position = self.epoch + 1, 0
        idx = self._order()[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        batch = tokenize_prompts([self.rows[i] for i in idx], self.tokenizer, self.max_prompt_length)
        batch.non_tensor_batch["uid"] = np.array(
            [f"e{self.epoch}_r{i}" for i in idx], dtype=object
        )
        return batch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position, self.seed = state["epoch"], state["position"], state["seed"]

"""The rollout output contract shared by the vLLM and HF engines, and sampling settings.

`generate(prompt_token_ids, sampling)` on either engine returns a dict of tensors, one row
per sample, the `n` samples of a prompt adjacent (prompt0 s0, prompt0 s1, ..., prompt1 s0):

    prompts            (N, P) int64   left-padded with the tokenizer's pad id, P = longest prompt
    responses          (N, R) int64   right-padded, R = sampling["max_tokens"]
    input_ids          (N, P + R)     cat(prompts, responses)
    attention_mask     (N, P + R)     1 on real prompt and generated tokens
    position_ids       (N, P + R)     max(cumsum(attention_mask) - 1, 0)
    response_mask      (N, R)         1 on generated tokens, eos included
    rollout_log_probs  (N, R) float32 log-prob of each sampled token, 0 on padding

with N = num_prompts * n. Log-probs are "processed": taken from the distribution actually
sampled from (after temperature / top-k / top-p); for greedy decoding, the raw softmax.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Sequence

import torch


@dataclass(frozen=True)
class Sampling:
    """Sampling settings accepted by both engines (`temperature == 0` means greedy)."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_tokens: int = 16
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    seed: int | None = None
    logprobs: bool = True

    @staticmethod
    def from_dict(sampling: dict) -> "Sampling":
        known = {f.name for f in fields(Sampling)}
        for key in sampling:
            if key not in known:
                raise ValueError(f"unknown sampling key {key!r}; known: {sorted(known)}")
        values = dict(sampling)
        for key in ("stop", "stop_token_ids"):
            if key in values and values[key] is not None:
                raw = values[key]
                values[key] = (raw,) if isinstance(raw, (str, int)) else tuple(raw)
            elif key in values:
                values[key] = ()
        out = Sampling(**values)
        if out.n < 1 or out.max_tokens < 1:
            raise ValueError(f"sampling n and max_tokens must be >= 1, got n={out.n}, max_tokens={out.max_tokens}")
        if out.temperature < 0:
            raise ValueError(f"sampling temperature must be >= 0, got {out.temperature}")
        return out

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def pack_rollout(
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    log_probs: Sequence[Sequence[float]] | None,
    n: int,
    response_length: int,
    pad_token_id: int,
) -> dict[str, torch.Tensor]:
    """Pad per-sample token lists into the contract above.

    `prompts` has one entry per prompt; `responses` / `log_probs` one per sample, prompt-major
    (len = len(prompts) * n). Responses longer than `response_length` are a caller bug.
    """
    num_samples = len(prompts) * n
    assert len(responses) == num_samples, "responses must be prompt-major, n per prompt"
    prompt_len = max(len(p) for p in prompts)
    prompt_ids = torch.full((num_samples, prompt_len), pad_token_id, dtype=torch.long)
    prompt_mask = torch.zeros((num_samples, prompt_len), dtype=torch.long)
    response_ids = torch.full((num_samples, response_length), pad_token_id, dtype=torch.long)
    response_mask = torch.zeros((num_samples, response_length), dtype=torch.long)
    rollout_log_probs = torch.zeros((num_samples, response_length), dtype=torch.float32)
    for row in range(num_samples):
        prompt, response = prompts[row // n], responses[row]
        assert len(response) <= response_length, "response longer than response_length"
        if prompt:
            prompt_ids[row, prompt_len - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
            prompt_mask[row, prompt_len - len(prompt):] = 1
        if response:
            response_ids[row, : len(response)] = torch.tensor(response, dtype=torch.long)
            response_mask[row, : len(response)] = 1
            if log_probs is not None:
                rollout_log_probs[row, : len(response)] = torch.tensor(log_probs[row], dtype=torch.float32)
    attention_mask = torch.cat([prompt_mask, response_mask], dim=1)
    return {
        "prompts": prompt_ids,
        "responses": response_ids,
        "input_ids": torch.cat([prompt_ids, response_ids], dim=1),
        "attention_mask": attention_mask,
        "position_ids": (attention_mask.cumsum(dim=1) - 1).clamp(min=0),
        "response_mask": response_mask,
        "rollout_log_probs": rollout_log_probs,
    }

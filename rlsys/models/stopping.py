"""Make a random-weight model stop: raise the EOS row of its LM head to a chosen probability.

A random-weight LM sampled at temperature 1 is close to uniform over its vocabulary, so it
almost never emits EOS and every response runs to the length limit. Benchmarks of the RL
step need lengths that vary the way RL lengths do, so `bias_eos_row` sets the EOS row of the
output head (the shared embedding when tied) to `c * u`, where `u` is the normalised mean of
the final hidden states (after the last norm) on sample inputs, and picks `c` by bisection so
that the mean per-token EOS probability at temperature 1 is `target_p`. Generation then stops
after a roughly geometric number of tokens (mean 1/p, long tail), truncated at the max
length L: mean (1 - (1 - p)^L) / p. Caveat, measured on random models: much of the spread
of the EOS logit is per sequence (each sequence's hidden states share a component), so lengths
are a mixture of geometric ones and their mean exceeds 1/p (on the Qwen2.5-1.5B shape,
p = 1/60 gave a mean of ~610 at L = 1024). `target_mean_length` fits that mixture instead:
c such that the mean over sample sequences i of (1 - (1 - p_i)^L) / p_i is the asked mean,
p_i = sequence i's mean EOS probability. Callers still report the achieved length. Only the
EOS row changes; EOS never occurs inside the
sample inputs, so the hidden states (and the other logits) do not depend on `c`.

    from rlsys.models.stopping import bias_eos_in_dir
    bias_eos_in_dir("/tmp/rand", target_p=1 / 300)   # rewrites the safetensors in place

`scripts/bench_train_step.py` uses it; `tests/unit/test_stopping.py` checks the achieved probability.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

BIAS_FILE = "eos_bias.json"


def expected_length(p: float, max_length: int) -> float:
    """Mean of a geometric length (per-token stop probability p, EOS counted) truncated at max_length."""
    return (1.0 - (1.0 - p) ** max_length) / p if p > 0 else float(max_length)


def sample_input_ids(vocab_size: int, num_sequences: int, length: int, excluded: set[int],
                     seed: int = 0) -> torch.Tensor:
    """(num_sequences, length) token ids drawn uniformly from the vocabulary minus `excluded`
    (what a near-uniform random model generates, without EOS / special tokens)."""
    allowed = torch.tensor([i for i in range(vocab_size) if i not in excluded])
    generator = torch.Generator().manual_seed(seed)
    return allowed[torch.randint(len(allowed), (num_sequences, length), generator=generator)]


@torch.no_grad()
def final_hidden_states(model, input_ids: torch.Tensor) -> torch.Tensor:
    """(num_tokens, hidden) fp32: the hidden states the LM head sees (after the final norm)."""
    device = next(model.parameters()).device
    out = model.model(input_ids=input_ids.to(device))
    return out.last_hidden_state.reshape(-1, out.last_hidden_state.shape[-1]).float()


def mean_eos_probability(log_z_other: torch.Tensor, eos_logits: torch.Tensor) -> float:
    """Mean over tokens of softmax([other logits, eos logit])[eos] = sigmoid(eos - logsumexp(others)),
    with log_z_other = logsumexp of the non-EOS logits, (tokens,)."""
    return float(torch.sigmoid(eos_logits - log_z_other).mean())


@torch.no_grad()
def mixture_mean_length(log_z_other: torch.Tensor, eos_logits: torch.Tensor, max_length: int) -> float:
    """Mean truncated-geometric length over sequences, each at its own stop probability:
    mean_i (1 - (1 - p_i)^L) / p_i, p_i = mean_t sigmoid(eos_it - log_z_it); inputs (seqs, tokens)."""
    p = torch.sigmoid(eos_logits - log_z_other).mean(-1).double().clamp(min=1e-12)
    return float(((1.0 - (1.0 - p) ** max_length) / p).mean())


@torch.no_grad()
def bias_eos_row(model, eos_token_id: int, target_p: float | None, input_ids: torch.Tensor,
                 iterations: int = 60, target_mean_length: float | None = None,
                 max_length: int | None = None) -> dict:
    """Set the EOS row of `model`'s output head to c * u with mean EOS probability `target_p`
    on `input_ids` (num_sequences, length), which must not contain EOS: u from the first half of
    the sequences, c fitted on the second. Or, with `target_mean_length` (and `max_length`, the
    truncation L), fit c to that mean length of the per-sequence mixture (`mixture_mean_length`).
    Returns {"scale", "target_p", "achieved_p"} (+ "target_mean_length", "fitted_mean_length"),
    achieved_p measured on the second half by a real forward after the (dtype-rounded) row is written."""
    if target_mean_length is not None:
        if max_length is None or not 1.0 <= target_mean_length <= max_length:
            raise ValueError(f"target_mean_length={target_mean_length} needs max_length >= it (got {max_length})")
        target_p = 1.0 / target_mean_length  # only the starting bracket and the report
    if target_p is None or not 0.0 < target_p < 1.0:
        raise ValueError(f"target_p={target_p} must be in (0, 1)")
    if bool((input_ids == eos_token_id).any()):
        raise ValueError("input_ids contain the EOS token: its embedding would depend on the scale")
    head = model.get_output_embeddings().weight
    # Direction from one half of the sequences, scale fitted on the other: a direction taken
    # from the same tokens it is scored on overstates their projection (and so the probability).
    half = max(1, len(input_ids) // 2)
    mean = final_hidden_states(model, input_ids[:half]).mean(0)
    direction = mean / mean.norm()
    held_out = input_ids[half:] if len(input_ids) > 1 else input_ids
    hidden = final_hidden_states(model, held_out)  # (tokens, hidden)
    keep = torch.ones(head.shape[0], dtype=torch.bool, device=head.device)
    keep[eos_token_id] = False
    log_z_other = torch.logsumexp(hidden @ head[keep].float().T, dim=-1)  # (tokens,)
    projection = hidden @ direction  # (tokens,): the EOS logit per unit of scale

    if target_mean_length is None:
        def p_at(scale: float) -> float:
            return mean_eos_probability(log_z_other, scale * projection)
    else:  # a longer mean length is a lower probability: bisect on 1 / length, increasing in c
        rows = held_out.shape[0]

        def p_at(scale: float) -> float:
            return 1.0 / mixture_mean_length(log_z_other.view(rows, -1), scale * projection.view(rows, -1),
                                             max_length)

    low, high = 0.0, 1.0
    while p_at(high) < target_p:
        low, high = high, high * 2.0
        if high > 1e6:
            raise ValueError(f"EOS probability {p_at(high):.3g} stays below target {target_p} (degenerate hidden states)")
    for _ in range(iterations):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if p_at(mid) < target_p else (low, mid)
    scale = 0.5 * (low + high)
    head[eos_token_id] = (scale * direction).to(head.dtype).to(head.device)
    device = next(model.parameters()).device
    logits = model(input_ids=held_out.to(device)).logits.float()
    achieved = float(torch.softmax(logits, dim=-1)[..., eos_token_id].mean())
    result = {"scale": scale, "target_p": target_p, "achieved_p": achieved}
    if target_mean_length is not None:
        result.update(target_p=None, target_mean_length=target_mean_length, max_length=max_length,
                      fitted_mean_length=1.0 / p_at(scale))
    return result


def bias_eos_in_dir(model_dir: str | Path, target_p: float | None, device: str = "cpu", num_sequences: int = 64,
                    length: int = 128, seed: int = 0, target_mean_length: float | None = None,
                    max_length: int | None = None) -> dict:
    """Load the HF model in `model_dir` (cuda: bf16; cpu: fp32), bias its EOS row to `target_p`
    (or to `target_mean_length` at truncation `max_length`: `bias_eos_row`), save it back in
    the directory's dtype and write the result to `<model_dir>/eos_bias.json`."""
    from transformers import AutoConfig, AutoModelForCausalLM

    model_dir = Path(model_dir)
    config = AutoConfig.from_pretrained(model_dir)
    saved_dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or torch.float32
    saved_dtype = getattr(torch, saved_dtype) if isinstance(saved_dtype, str) else saved_dtype
    compute_dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=compute_dtype).to(device).eval()
    eos = config.eos_token_id if isinstance(config.eos_token_id, int) else config.eos_token_id[0]
    specials = {t for t in (config.eos_token_id, config.pad_token_id, config.bos_token_id) if isinstance(t, int)}
    ids = sample_input_ids(config.vocab_size, num_sequences, min(length, config.max_position_embeddings),
                           specials, seed)
    result = bias_eos_row(model, eos, target_p, ids, target_mean_length=target_mean_length,
                          max_length=max_length)
    model.to(saved_dtype).save_pretrained(model_dir, safe_serialization=True)
    (model_dir / BIAS_FILE).write_text(json.dumps(result, indent=2))
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return result

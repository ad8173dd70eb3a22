"""Response log-probs and entropy without the (batch, seq, vocab) logits tensor.

`chunked_log_probs` applies the LM head and a log-softmax to chosen hidden states in chunks
of tokens, in fp32 per chunk, with a custom autograd function whose backward recomputes
each chunk's logits: at most one chunk of (chunk, vocab) fp32 logits lives at a time, in
forward and in backward. `ResponseScorer` wraps a HF causal LM so that one module's forward
(the FSDP2 root) runs the decoder, takes the hidden states of response positions only, and
scores them with the chunked head.
"""

from __future__ import annotations

import torch

from rlsys.workers.micro_batches import PackedMicroBatch


def _chunk_logits(hidden: torch.Tensor, weight: torch.Tensor, temperature: float) -> torch.Tensor:
    return (hidden @ weight.t()).float() / temperature


class _ChunkedLogProbs(torch.autograd.Function):
    """log p(target) and entropy of softmax(h W^T / T), chunk by chunk.

    Forward per chunk: z = h W^T / T (fp32), lse = logsumexp(z), log_prob = z[target] - lse,
    entropy = lse - sum_v p_v z_v. Backward per chunk (z recomputed, p = exp(z - lse)):
        dL/dz = g_lp * (onehot(target) - p) - g_ent * p * (z - E_p[z])
    then dL/dh = (dL/dz / T) W and dL/dW = sum over chunks of (dL/dz / T)^T h."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, temperature, chunk_size, with_entropy):
        num_tokens = hidden.shape[0]
        log_probs = hidden.new_empty(num_tokens, dtype=torch.float32)
        entropy = hidden.new_empty(num_tokens, dtype=torch.float32) if with_entropy else None
        lse_all = hidden.new_empty(num_tokens, dtype=torch.float32)
        for start in range(0, num_tokens, chunk_size):
            end = min(start + chunk_size, num_tokens)
            z = _chunk_logits(hidden[start:end], weight, temperature)
            lse = torch.logsumexp(z, dim=-1)
            lse_all[start:end] = lse
            log_probs[start:end] = z.gather(1, targets[start:end, None]).squeeze(1) - lse
            if with_entropy:
                entropy[start:end] = lse - (torch.softmax(z, dim=-1) * z).sum(-1)
            del z
        ctx.save_for_backward(hidden, weight, targets, lse_all)
        ctx.temperature, ctx.chunk_size, ctx.with_entropy = temperature, chunk_size, with_entropy
        if with_entropy:
            return log_probs, entropy
        return log_probs, log_probs.new_zeros(0)

    @staticmethod
    def backward(ctx, grad_log_probs, grad_entropy):
        hidden, weight, targets, lse_all = ctx.saved_tensors
        temperature, chunk_size = ctx.temperature, ctx.chunk_size
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) \
            if ctx.needs_input_grad[1] else None
        use_entropy = ctx.with_entropy and grad_entropy is not None and grad_entropy.numel() > 0
        for start in range(0, hidden.shape[0], chunk_size):
            end = min(start + chunk_size, hidden.shape[0])
            h = hidden[start:end]
            z = _chunk_logits(h, weight, temperature)
            p = torch.exp(z - lse_all[start:end, None])
            g = grad_log_probs[start:end, None] if grad_log_probs is not None else torch.zeros_like(z[:, :1])
            dz = -g * p
            dz.scatter_add_(1, targets[start:end, None], g)
            if use_entropy:
                mean_z = (p * z).sum(-1, keepdim=True)
                dz -= grad_entropy[start:end, None] * p * (z - mean_z)
            del z, p
            dz = (dz / temperature).to(hidden.dtype)
            if grad_hidden is not None:
                grad_hidden[start:end] = dz @ weight
            if grad_weight is not None:
                grad_weight += (dz.t() @ h).float()
            del dz
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        return grad_hidden, grad_weight, None, None, None, None


def chunked_log_probs(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0,
                      chunk_size: int = 1024, with_entropy: bool = False):
    """Log-probs (and entropy) of `targets` under softmax(hidden @ weight.T / temperature).

    hidden (tokens, H) in the compute dtype, weight (vocab, H), targets (tokens,) int64.
    Returns (log_probs (tokens,) fp32, entropy (tokens,) fp32 or None); differentiable in
    hidden and weight. Equals log_softmax of the full logits, without materialising them."""
    if chunk_size <= 0:
        raise ValueError(f"logprob_chunk_size={chunk_size} must be positive")
    log_probs, entropy = _ChunkedLogProbs.apply(hidden, weight, targets, float(temperature), int(chunk_size),
                                                bool(with_entropy))
    return log_probs, (entropy if with_entropy else None)


def gather_response_positions(per_position: torch.Tensor, packed: PackedMicroBatch) -> torch.Tensor:
    """(rows, W, ...) outputs of a packed micro-batch -> (rows, Rm, ...) at the positions that
    predict each response token."""
    index = packed.score_index
    if per_position.dim() == 3:
        index = index.unsqueeze(-1).expand(-1, -1, per_position.shape[-1])
    return torch.gather(per_position, 1, index)


class ResponseScorer(torch.nn.Module):
    """A HF causal LM whose forward returns response-token log-probs (and entropy).

    forward(packed) -> (log_probs, entropy or None), each (rows, Rm) fp32, 0 where the
    response is padding. Only the decoder runs over the whole sequence; the LM head sees
    the response positions' hidden states, in chunks (`chunked_log_probs`). Models whose
    logits are more than `lm_head(hidden)` (e.g. logit soft-capping) are not supported."""

    def __init__(self, lm: torch.nn.Module, chunk_size: int = 1024):
        super().__init__()
        self.lm = lm
        self.chunk_size = chunk_size

    def forward(self, packed: PackedMicroBatch, temperature: float = 1.0, with_entropy: bool = False):
        decoder = self.lm.get_decoder()
        hidden = decoder(input_ids=packed.input_ids, attention_mask=packed.attention_mask,
                         position_ids=packed.position_ids, use_cache=False).last_hidden_state
        hidden = gather_response_positions(hidden, packed)[packed.response_valid]
        targets = packed.response_tokens[packed.response_valid]
        weight = self.lm.get_output_embeddings().weight
        log_probs, entropy = chunked_log_probs(hidden, weight, targets, temperature, self.chunk_size, with_entropy)
        return _scatter(log_probs, packed), (_scatter(entropy, packed) if with_entropy else None)


def _scatter(values: torch.Tensor, packed: PackedMicroBatch) -> torch.Tensor:
    out = values.new_zeros(packed.response_valid.shape)
    return out.masked_scatter(packed.response_valid, values)

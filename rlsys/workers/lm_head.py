"""Response log-probs and entropy without the (batch, seq, vocab) logits tensor.

`chunked_log_probs` applies the LM head and a log-softmax to chosen hidden states in chunks
of tokens, in fp32 per chunk, with a custom autograd function whose backward recomputes
each chunk's logits: at most one chunk of (chunk, vocab) fp32 logits lives at a time, in
forward and in backward. `keep_logits=True` trades memory for one matmul: the forward keeps
the head's raw logits (tokens, vocab) in the compute dtype, as the matmul produced them, and
the backward reads them instead of recomputing (the same values: a bf16 matmul's output).
`ResponseScorer` wraps a HF causal LM so that one module's forward
(the FSDP2 root) runs the decoder, takes the hidden states of response positions only, and
scores them with the chunked head.
"""

from __future__ import annotations

import torch

from rlsys.workers.micro_batches import PackedMicroBatch


def chunk_forward(raw_logits, targets, temperature: float, with_entropy: bool):
    """One chunk's (lse, log_prob, entropy or None) from raw logits h W^T (chunk, vocab):
    z = raw / T in fp32, lse = logsumexp(z), log_prob = z[target] - lse,
    entropy = lse - sum_v softmax(z)_v z_v."""
    z = raw_logits.float() / temperature
    lse = torch.logsumexp(z, dim=-1)
    log_prob = z.gather(1, targets[:, None]).squeeze(1) - lse
    entropy = lse - (torch.softmax(z, dim=-1) * z).sum(-1) if with_entropy else None
    return lse, log_prob, entropy


def chunk_logit_grad(raw_logits, targets, lse, grad_log_prob, grad_entropy, temperature: float):
    """dL/d(h W^T) of one chunk, in raw_logits' dtype (z = raw / T, p = exp(z - lse)):
        (g_lp * (onehot(target) - p) - g_ent * p * (z - E_p[z])) / T.
    grad_log_prob / grad_entropy: (chunk,) or None (no gradient flows to that output)."""
    z = raw_logits.float() / temperature
    p = torch.exp(z - lse[:, None])
    if grad_log_prob is not None:
        dz = (-grad_log_prob[:, None] * p).scatter_add(1, targets[:, None], grad_log_prob[:, None])
    else:
        dz = torch.zeros_like(z)
    if grad_entropy is not None:
        dz = dz - grad_entropy[:, None] * p * (z - (p * z).sum(-1, keepdim=True))
    return (dz / temperature).to(raw_logits.dtype)


_COMPILED: dict = {}


def _chunk_fns(compiled: bool):
    """(forward, grad) chunk functions; with `compiled`, torch.compile'd (dynamic shapes) so that
    the fp32 elementwise passes over (chunk, vocab) fuse into a few kernels."""
    if not compiled:
        return chunk_forward, chunk_logit_grad
    if not _COMPILED:
        _COMPILED["fns"] = (torch.compile(chunk_forward, dynamic=True), torch.compile(chunk_logit_grad, dynamic=True))
    return _COMPILED["fns"]


class _ChunkedLogProbs(torch.autograd.Function):
    """log p(target) and entropy of softmax(h W^T / T), chunk by chunk (`chunk_forward`).

    Backward per chunk: dL/dz from `chunk_logit_grad` (raw logits recomputed, or read from the
    forward's kept copy), then dL/dh = dL/dz W and dL/dW = sum over chunks of dL/dz^T h."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, temperature, chunk_size, with_entropy, compiled, keep_logits):
        forward_fn, _ = _chunk_fns(compiled)
        num_tokens = hidden.shape[0]
        log_probs = hidden.new_empty(num_tokens, dtype=torch.float32)
        entropy = hidden.new_empty(num_tokens, dtype=torch.float32) if with_entropy else None
        lse_all = hidden.new_empty(num_tokens, dtype=torch.float32)
        kept = hidden.new_empty(num_tokens, weight.shape[0]) if keep_logits else None
        for start in range(0, num_tokens, chunk_size):
            end = min(start + chunk_size, num_tokens)
            raw = torch.matmul(hidden[start:end], weight.t(), out=None if kept is None else kept[start:end])
            lse, lp, ent = forward_fn(raw, targets[start:end], temperature, with_entropy)
            lse_all[start:end] = lse
            log_probs[start:end] = lp
            if with_entropy:
                entropy[start:end] = ent
            del raw
        ctx.save_for_backward(hidden, weight, targets, lse_all)
        ctx.kept_logits = kept
        ctx.set_materialize_grads(False)  # an unused output (entropy at entropy_coeff 0) gets None: no work
        ctx.temperature, ctx.chunk_size, ctx.with_entropy, ctx.compiled = temperature, chunk_size, with_entropy, compiled
        if with_entropy:
            return log_probs, entropy
        return log_probs, log_probs.new_zeros(0)

    @staticmethod
    def backward(ctx, grad_log_probs, grad_entropy):
        hidden, weight, targets, lse_all = ctx.saved_tensors
        kept, ctx.kept_logits = ctx.kept_logits, None
        temperature, chunk_size = ctx.temperature, ctx.chunk_size
        _, grad_fn = _chunk_fns(ctx.compiled)
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) \
            if ctx.needs_input_grad[1] else None
        if not (ctx.with_entropy and grad_entropy is not None and grad_entropy.numel() > 0):
            grad_entropy = None
        for start in range(0, hidden.shape[0], chunk_size):
            end = min(start + chunk_size, hidden.shape[0])
            h = hidden[start:end]
            raw = h @ weight.t() if kept is None else kept[start:end]
            dz = grad_fn(raw, targets[start:end], lse_all[start:end],
                         None if grad_log_probs is None else grad_log_probs[start:end],
                         None if grad_entropy is None else grad_entropy[start:end], temperature)
            del raw
            if grad_hidden is not None:
                grad_hidden[start:end] = dz @ weight
            if grad_weight is not None:
                grad_weight += (dz.t() @ h).float()
            del dz
        del kept
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        return grad_hidden, grad_weight, None, None, None, None, None, None


def chunked_log_probs(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0,
                      chunk_size: int = 1024, with_entropy: bool = False, compiled: bool = False,
                      keep_logits: bool = False):
    """Log-probs (and entropy) of `targets` under softmax(hidden @ weight.T / temperature).

    hidden (tokens, H) in the compute dtype, weight (vocab, H), targets (tokens,) int64.
    Returns (log_probs (tokens,) fp32, entropy (tokens,) fp32 or None); differentiable in
    hidden and weight. Equals log_softmax of the full logits, without materialising them.
    `compiled`: the per-chunk work runs torch.compile'd (same values, fewer kernels).
    `keep_logits`: when a gradient will be taken, keep the raw (tokens, vocab) logits in
    hidden's dtype for the backward (tokens x vocab x itemsize bytes) instead of recomputing
    them; the same values and gradients."""
    if chunk_size <= 0:
        raise ValueError(f"logprob_chunk_size={chunk_size} must be positive")
    keep = bool(keep_logits) and torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    log_probs, entropy = _ChunkedLogProbs.apply(hidden, weight, targets, float(temperature), int(chunk_size),
                                                bool(with_entropy), bool(compiled), keep)
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
    logits are more than `lm_head(hidden)` (e.g. logit soft-capping) are not supported.

    Packed rows are right-padded, so causal attention alone keeps every real token from
    seeing padding (which only follows it): the decoder gets no padding mask, and SDPA runs
    its causal flash kernel instead of a masked one. `mask_padding=True` passes the mask
    anyway (the same values at real positions; scripts/bench_update_kernels.py compares).
    On CUDA, SDPA tries flash attention first (`flash_first`): PyTorch's default picks cuDNN,
    which builds a plan per new shape, and every micro-batch has its own width.
    `compiled`: the LM-head chunks run torch.compile'd; `keep_logits`: the training forward
    keeps its raw logits for the backward (`chunked_log_probs`)."""

    def __init__(self, lm: torch.nn.Module, chunk_size: int = 1024, mask_padding: bool = False,
                 compiled: bool = False, flash_first: bool = True, keep_logits: bool = False):
        super().__init__()
        self.lm = lm
        self.chunk_size = chunk_size
        self.mask_padding = mask_padding
        self.compiled = compiled
        self.flash_first = flash_first
        self.keep_logits = keep_logits

    def forward(self, packed: PackedMicroBatch, temperature: float = 1.0, with_entropy: bool = False):
        decoder = self.lm.get_decoder()
        mask = packed.attention_mask if self.mask_padding else None
        with _attention_backends(packed.input_ids.is_cuda and self.flash_first):
            hidden = decoder(input_ids=packed.input_ids, attention_mask=mask,
                             position_ids=packed.position_ids, use_cache=False).last_hidden_state
        hidden = gather_response_positions(hidden, packed).flatten(0, 1).index_select(0, packed.valid_index)
        targets = packed.response_tokens.flatten().index_select(0, packed.valid_index)
        weight = self.lm.get_output_embeddings().weight
        log_probs, entropy = chunked_log_probs(hidden, weight, targets, temperature, self.chunk_size, with_entropy,
                                               self.compiled, self.keep_logits)
        return _scatter(log_probs, packed), (_scatter(entropy, packed) if with_entropy else None)


def _scatter(values: torch.Tensor, packed: PackedMicroBatch) -> torch.Tensor:
    """(n_valid,) values of the real response tokens -> (rows, Rm), 0 elsewhere (no sync)."""
    width = packed.response_valid.shape[1]
    rows_cols = (packed.valid_index // width, packed.valid_index % width)
    return values.new_zeros(packed.response_valid.shape).index_put(rows_cols, values)  # a new tensor, not a view


def _attention_backends(flash_first: bool):
    """SDPA backend order for the decoder: flash, memory-efficient, cuDNN, math (CUDA)."""
    from contextlib import nullcontext

    if not flash_first:
        return nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    order = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.MATH]
    return sdpa_kernel(order, set_priority=True)

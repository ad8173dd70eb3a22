"""Chunked LM-head log-probs and entropy equal the plain full-logits computation, values and gradients."""

from __future__ import annotations

import pytest
import torch

from rlsys.workers.lm_head import chunked_log_probs


def plain(hidden, weight, targets, temperature):
    logits = (hidden @ weight.t()).float() / temperature
    log_softmax = torch.log_softmax(logits, dim=-1)
    log_probs = log_softmax.gather(1, targets[:, None]).squeeze(1)
    entropy = -(log_softmax.exp() * log_softmax).sum(-1)
    return log_probs, entropy


@pytest.mark.parametrize("chunk_size", [1, 7, 64])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_chunked_values_and_gradients_equal_plain(chunk_size, temperature):
    g = torch.Generator().manual_seed(0)
    tokens, hidden_size, vocab = 37, 16, 50
    hidden = torch.randn(tokens, hidden_size, generator=g, dtype=torch.float64)
    weight = torch.randn(vocab, hidden_size, generator=g, dtype=torch.float64) * 0.5
    targets = torch.randint(0, vocab, (tokens,), generator=g)
    g_lp, g_ent = torch.randn(tokens, generator=g), torch.randn(tokens, generator=g)

    results = []
    for fn in ("plain", "chunked"):
        h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        if fn == "plain":
            lp, ent = plain(h, w, targets, temperature)
        else:
            lp, ent = chunked_log_probs(h, w, targets, temperature, chunk_size, with_entropy=True)
        ((lp * g_lp).sum() + (ent * g_ent).sum()).backward()
        results.append((lp.detach(), ent.detach(), h.grad, w.grad))
    for a, b in zip(*results):
        torch.testing.assert_close(a.double(), b.double(), rtol=1e-4, atol=1e-5)  # both fp32 logits
    assert results[0][3].abs().sum() > 0


def test_chunked_without_entropy_and_bf16_close_to_fp32():
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(20, 32, generator=g)
    weight = torch.randn(100, 32, generator=g) * 0.3
    targets = torch.randint(0, 100, (20,), generator=g)
    lp32, ent = chunked_log_probs(hidden, weight, targets, 1.0, 8)
    assert ent is None
    lp16, _ = chunked_log_probs(hidden.bfloat16(), weight.bfloat16(), targets, 1.0, 8)
    assert lp16.dtype == torch.float32  # fp32 per chunk even when the inputs are bf16
    torch.testing.assert_close(lp16, lp32, rtol=0, atol=0.15)
    torch.testing.assert_close(lp32, plain(hidden, weight, targets, 1.0)[0], rtol=1e-5, atol=1e-5)


def test_rejects_bad_chunk_size():
    with pytest.raises(ValueError, match="logprob_chunk_size"):
        chunked_log_probs(torch.zeros(2, 2), torch.zeros(3, 2), torch.zeros(2, dtype=torch.long), chunk_size=0)


def test_compiled_chunks_equal_eager_and_skip_an_unused_entropy():
    """compiled=True (torch.compile'd chunk work) gives the eager values and gradients; an entropy
    output that takes no part in the loss gets no gradient work (None reaches backward)."""
    g = torch.Generator().manual_seed(2)
    hidden = torch.randn(45, 16, generator=g)
    weight = torch.randn(70, 16, generator=g) * 0.5
    targets = torch.randint(0, 70, (45,), generator=g)
    g_lp = torch.randn(45, generator=g)
    results = []
    for compiled in (False, True):
        for use_entropy in (True, False):
            h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
            lp, ent = chunked_log_probs(h, w, targets, 0.7, 16, with_entropy=True, compiled=compiled)
            loss = (lp * g_lp).sum() + (ent.sum() if use_entropy else 0)
            loss.backward()
            results.append((lp.detach(), ent.detach(), h.grad, w.grad))
    eager_ent, eager_no_ent, comp_ent, comp_no_ent = results
    for a, b in [(eager_ent, comp_ent), (eager_no_ent, comp_no_ent)]:
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    (chunked_log_probs(h, w, targets, 0.7, 16)[0] * g_lp).sum().backward()
    torch.testing.assert_close(eager_no_ent[2], h.grad)  # unused entropy = no entropy at all
    assert not torch.allclose(eager_ent[2], eager_no_ent[2])


@pytest.mark.parametrize("compiled", [False, True])
def test_kept_logits_give_the_recomputed_values_and_gradients(compiled):
    """keep_logits=True (the backward reads the forward's raw logits) equals recomputing them,
    in fp32 and in bf16, with and without the entropy term."""
    g = torch.Generator().manual_seed(3)
    for dtype in (torch.float32, torch.bfloat16):
        hidden = torch.randn(53, 16, generator=g).to(dtype)
        weight = (torch.randn(90, 16, generator=g) * 0.5).to(dtype)
        targets = torch.randint(0, 90, (53,), generator=g)
        g_lp, g_ent = torch.randn(53, generator=g), torch.randn(53, generator=g)
        for use_entropy in (True, False):
            results = []
            for keep in (False, True):
                h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
                lp, ent = chunked_log_probs(h, w, targets, 0.7, 16, with_entropy=True, compiled=compiled,
                                            keep_logits=keep)
                ((lp * g_lp).sum() + ((ent * g_ent).sum() if use_entropy else 0)).backward()
                results.append((lp.detach(), ent.detach(), h.grad, w.grad))
            for a, b in zip(*results):
                torch.testing.assert_close(a, b, rtol=0, atol=0)
            assert results[1][2].abs().sum() > 0

"""rlsys.workers.attention: the trainer's causal attention on one chosen SDPA kernel gives HF's
SDPA values and gradients (grouped-query heads, eager and inside torch.compile'd layers), and
bad names fail naming the key. CPU, tiny model, seconds."""

from __future__ import annotations

import json

import pytest
import torch

from rlsys.models.shapes import QWEN2_SHAPES
from rlsys.models.tiny import build_tiny_model
from rlsys.workers import model_utils
from rlsys.workers.attention import causal_attention, resolve_backend, use_attention_backend


def logits_and_grads(model, ids):
    model.zero_grad()
    logits = model(input_ids=ids).logits
    (logits.float() ** 2).mean().backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("backend", ["flash", "math"])
@pytest.mark.parametrize("compiled", [False, True])
def test_chosen_backend_equals_hf_sdpa(backend, compiled):
    model, _ = build_tiny_model(0, **QWEN2_SHAPES["tiny"])
    assert model.config.num_attention_heads > model.config.num_key_value_heads  # grouped-query heads
    model.train()
    ids = torch.randint(3, model.config.vocab_size, (3, 19), generator=torch.Generator().manual_seed(0))
    want_logits, want_grads = logits_and_grads(model, ids)
    use_attention_backend(model, backend)
    assert model.config._attn_implementation.startswith("rlsys_causal_")
    if compiled:
        model_utils.compile_decoder_layers(model)
    for width in (19, 11):  # a second width: the dynamic compiled layers and the eager kernel again
        got_logits, got_grads = logits_and_grads(model, ids[:, :width])
        if width == 19:
            torch.testing.assert_close(got_logits, want_logits, rtol=1e-5, atol=1e-5)
            for name, grad in want_grads.items():
                torch.testing.assert_close(got_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    assert torch.isfinite(got_logits).all()


def test_causal_attention_repeats_heads_like_gqa():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, h, 7, 16, generator=g) for h in (6, 2, 2))
    out = causal_attention(q, k, v, "math")
    k6, v6 = k.repeat_interleave(3, dim=1), v.repeat_interleave(3, dim=1)
    scores = (q @ k6.transpose(-1, -2)) / 4.0 + torch.full((7, 7), float("-inf")).triu(1)
    want = (torch.softmax(scores, -1) @ v6).transpose(1, 2)
    assert out.shape == (2, 7, 6, 16) and out.is_contiguous()
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)


def test_backend_names_and_defaults():
    assert resolve_backend("auto", torch.device("cpu")) == "sdpa"
    assert resolve_backend("auto", torch.device("cuda", 0)) == "flash"
    with pytest.raises(ValueError, match="actor.attention_backend='flsh'"):
        resolve_backend("flsh", torch.device("cpu"))
    from rlsys.config.checks import check_config
    from rlsys.config.schema import RLConfig

    config = RLConfig()
    config.actor.attention_backend = "flsh"
    with pytest.raises(ValueError, match="actor.attention_backend='flsh'"):
        check_config(config, cuda_available=False)


def test_saved_model_does_not_name_the_registered_attention(tmp_path):
    """Checkpoints' HF directories load anywhere: the rlsys attention name is not saved."""
    model, _ = build_tiny_model(0, **QWEN2_SHAPES["tiny"])
    use_attention_backend(model, "flash")
    model.save_pretrained(tmp_path)
    assert "rlsys_causal" not in json.dumps(json.loads((tmp_path / "config.json").read_text()))

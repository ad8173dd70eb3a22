"""EOS biasing of random-weight models (rlsys.models.stopping): the measured EOS probability
lands near the target, and sampled lengths follow from it. CPU, tiny shapes, seconds."""

from __future__ import annotations

import json

import pytest
import torch

from rlsys.models.shapes import QWEN2_SHAPES
from rlsys.models.stopping import BIAS_FILE, bias_eos_in_dir, bias_eos_row, expected_length, sample_input_ids
from rlsys.models.tiny import build_tiny_model, build_tiny_model_dir


def test_expected_length_is_truncated_geometric_mean():
    assert expected_length(0.5, 1) == pytest.approx(1.0)
    assert expected_length(0.01, 10_000) == pytest.approx(100.0, rel=1e-6)
    assert expected_length(1 / 300, 1024) == pytest.approx(300 * (1 - (1 - 1 / 300) ** 1024))


@pytest.mark.parametrize("target_p", [1 / 20, 1 / 300])
def test_bias_eos_row_hits_target_on_tied_tiny_shape(target_p):
    model, tokenizer = build_tiny_model(0, **{**QWEN2_SHAPES["tiny"], "max_position_embeddings": 256})
    before = model.get_output_embeddings().weight.clone()
    ids = sample_input_ids(model.config.vocab_size, 64, 64, {0, 1, 2}, seed=0)
    result = bias_eos_row(model.eval(), tokenizer.eos_token_id, target_p, ids)
    assert target_p / 2 <= result["achieved_p"] <= target_p * 2
    after = model.get_output_embeddings().weight
    changed = (after != before).any(dim=1)
    assert changed.nonzero().flatten().tolist() == [tokenizer.eos_token_id]
    # The probability holds on inputs the bisection did not see.
    fresh = sample_input_ids(model.config.vocab_size, 32, 64, {0, 1, 2}, seed=1)
    with torch.no_grad():
        p_fresh = float(torch.softmax(model(input_ids=fresh).logits, -1)[..., tokenizer.eos_token_id].mean())
    assert target_p / 2 <= p_fresh <= target_p * 2


def test_unbiased_random_model_rarely_stops():
    model, tokenizer = build_tiny_model(0, **QWEN2_SHAPES["tiny"])
    ids = sample_input_ids(model.config.vocab_size, 2, 32, {0, 1, 2}, seed=0)
    with torch.no_grad():
        p = float(torch.softmax(model(input_ids=ids).logits, -1)[..., tokenizer.eos_token_id].mean())
    assert p < 1 / 200  # ~1/vocab: why the bias is needed


def test_bias_eos_in_dir_saves_and_sampled_lengths_match(tmp_path):
    from transformers import AutoModelForCausalLM

    target_p, max_new = 1 / 10, 40
    shape = {**QWEN2_SHAPES["tiny"], "max_position_embeddings": 128}
    model_dir = build_tiny_model_dir(tmp_path / "m", 0, dtype="bfloat16", **shape)
    result = bias_eos_in_dir(model_dir, target_p, num_sequences=32, length=64)
    assert json.loads((model_dir / BIAS_FILE).read_text()) == result
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    prompts = sample_input_ids(model.config.vocab_size, 64, 5, {0, 1, 2}, seed=3)
    torch.manual_seed(0)
    out = model.generate(prompts, attention_mask=torch.ones_like(prompts), do_sample=True, temperature=1.0,
                         top_k=0, top_p=1.0, max_new_tokens=max_new, eos_token_id=1, pad_token_id=0)
    responses = out[:, prompts.shape[1]:]
    ended = (responses == 1).int()
    lengths = torch.where(ended.any(1), ended.argmax(1) + 1, torch.full((len(responses),), max_new))
    mean = float(lengths.float().mean())
    # Per-sequence spread of the EOS logit makes the mean longer than the geometric 1/p (see
    # the module docstring), but the model now stops: unbiased, every row runs to max_new.
    assert mean < 0.75 * max_new
    assert int(lengths.max()) > int(lengths.min())  # lengths vary


def test_mixture_mean_length_of_equal_sequences_is_the_geometric_mean():
    from rlsys.models.stopping import mixture_mean_length

    log_z = torch.zeros(3, 5)
    eos = torch.full((3, 5), float(torch.logit(torch.tensor(0.01))))  # p = 0.01 everywhere
    assert mixture_mean_length(log_z, eos, 1000) == pytest.approx(expected_length(0.01, 1000), rel=1e-4)
    # two sequences at p = 0.5 and p = 0.001: the mean of their lengths, not the length of the mean p
    eos2 = torch.logit(torch.tensor([[0.5], [0.001]]))
    want = (expected_length(0.5, 100) + expected_length(0.001, 100)) / 2
    assert mixture_mean_length(torch.zeros(2, 1), eos2, 100) == pytest.approx(want, rel=1e-4)


def test_bias_to_mean_length_matches_sampled_lengths(tmp_path):
    """Fitting the mean length of the per-sequence mixture lands the sampled mean near it
    (measured 15.5 for 12 here), where fitting the per-token probability 1/12 overshoots
    (measured 24.7: the per-sequence spread, module docstring)."""
    from transformers import AutoModelForCausalLM

    target, max_new = 12.0, 40
    shape = {**QWEN2_SHAPES["tiny"], "max_position_embeddings": 128}
    model_dir = build_tiny_model_dir(tmp_path / "m", 0, dtype="bfloat16", **shape)
    result = bias_eos_in_dir(model_dir, None, num_sequences=64, length=48, target_mean_length=target,
                             max_length=max_new)
    assert result["fitted_mean_length"] == pytest.approx(target, rel=0.01)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    prompts = sample_input_ids(model.config.vocab_size, 128, 5, {0, 1, 2}, seed=3)
    torch.manual_seed(0)
    out = model.generate(prompts, attention_mask=torch.ones_like(prompts), do_sample=True, temperature=1.0,
                         top_k=0, top_p=1.0, max_new_tokens=max_new, eos_token_id=1, pad_token_id=0)
    ended = (out[:, prompts.shape[1]:] == 1).int()
    lengths = torch.where(ended.any(1), ended.argmax(1) + 1, torch.full((len(ended),), max_new))
    assert 0.7 * target <= float(lengths.float().mean()) <= 1.4 * target


def test_bias_to_mean_length_needs_max_length():
    model, tokenizer = build_tiny_model(0, **QWEN2_SHAPES["tiny"])
    ids = sample_input_ids(model.config.vocab_size, 4, 8, {0, 1, 2}, seed=0)
    with pytest.raises(ValueError, match="max_length"):
        bias_eos_row(model.eval(), tokenizer.eos_token_id, None, ids, target_mean_length=10.0)

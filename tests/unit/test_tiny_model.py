"""The embedded tiny model: tokenizer, Qwen2 model directory, supervised warm-up, vLLM parity.

Fast tests run on CPU in seconds; the `slow` ones start a vLLM engine or run the full warm-up.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
import torch

from rlsys.models.tiny import VOCAB_SIZE, build_tiny_model, build_tiny_model_dir, build_tokenizer
from rlsys.models.warmup import (
    DONE_FILE,
    WarmupConfig,
    carryless_sum,
    encode_sft_batch,
    ensure_base_model,
    greedy_accuracy,
    greedy_responses,
    run_sft,
    sft_rows,
    single_torch_thread,
)
from rlsys.tasks.arithmetic import make_arithmetic_dataset, split_problems

TEXTS = ["12+7=", "12+7=19", "-58", "3*4 = 12", "Hello, World!\n\tx", "  two  spaces "]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny"), seed=0)


def test_tokenizer_round_trip_one_token_per_character():
    tok = build_tokenizer()
    for text in TEXTS:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert len(ids) == len(text)
        assert tok.decode(ids) == text


def test_tokenizer_special_tokens_and_no_automatic_bos_eos():
    tok = build_tokenizer()
    assert (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id) == (0, 1, 2)
    assert tok("12+7=")["input_ids"] == tok("12+7=", add_special_tokens=False)["input_ids"]
    ids = tok("19", add_special_tokens=False)["input_ids"] + [tok.eos_token_id, tok.pad_token_id]
    assert tok.decode(ids, skip_special_tokens=True) == "19"
    assert tok.decode(ids) == "19<eos><pad>"
    assert len(tok) == VOCAB_SIZE


def test_model_dir_loads_with_auto_classes(model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert model.dtype == torch.float32
    assert model.config.hidden_size // model.config.num_attention_heads == 32
    assert model.config.eos_token_id == tok.eos_token_id
    assert (model_dir / "model.safetensors").exists()
    ids = torch.tensor([tok("12+7=", add_special_tokens=False)["input_ids"]])
    assert model(input_ids=ids).logits.shape == (1, 5, VOCAB_SIZE)


def test_reloaded_tokenizer_matches_built_one(model_dir):
    # transformers 5 rebuilds qwen2 tokenizers through Qwen2Tokenizer; ids must not change.
    from transformers import AutoTokenizer

    built, loaded = build_tokenizer(), AutoTokenizer.from_pretrained(model_dir)
    for text in TEXTS + ["12+7=19<eos>"]:
        assert loaded(text, add_special_tokens=False)["input_ids"] == built(text, add_special_tokens=False)["input_ids"]
        assert loaded.decode(built(text)["input_ids"]) == text
    assert (loaded.pad_token_id, loaded.eos_token_id, loaded.bos_token_id) == (0, 1, 2)


def test_same_seed_same_weights_different_seed_different_weights():
    a, _ = build_tiny_model(seed=3)
    b, _ = build_tiny_model(seed=3)
    c, _ = build_tiny_model(seed=4)
    wa, wb, wc = (m.model.layers[0].mlp.up_proj.weight for m in (a, b, c))
    assert torch.equal(wa, wb)
    assert not torch.equal(wa, wc)


def test_carryless_sum_and_noisy_labels():
    assert carryless_sum(58, 67) == 15
    assert carryless_sum(12, 7) == 19
    assert carryless_sum(99, 1) == 90
    assert carryless_sum(55, 62) == 17
    problems = [(58, "+", 67), (12, "+", 7)]
    assert [r["ground_truth"] for r in sft_rows(problems, 0.0, np.random.default_rng(0))] == ["125", "19"]
    assert [r["ground_truth"] for r in sft_rows(problems, 1.0, np.random.default_rng(0))] == ["15", "19"]
    with pytest.raises(ValueError, match=r"3\*4"):
        sft_rows([(3, "*", 4)], 0.0, np.random.default_rng(0))


def test_encode_sft_batch_masks_prompt_and_padding():
    tok = build_tokenizer()
    batch = encode_sft_batch([{"prompt": "1+1=", "ground_truth": "2"}, {"prompt": "10+10=", "ground_truth": "20"}], tok)
    assert batch["input_ids"].shape == (2, 9)
    assert batch["labels"][0].tolist() == [-100] * 4 + tok("2")["input_ids"] + [tok.eos_token_id] + [-100] * 3
    assert batch["attention_mask"][0].tolist() == [1] * 6 + [0] * 3
    assert batch["labels"][1, -1].item() == tok.eos_token_id


def test_short_warmup_lowers_loss_and_changes_parameters():
    model, tok = build_tiny_model(seed=0)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    config = WarmupConfig(num_clean_steps=20, num_noisy_steps=0, batch_size=32, warmup_steps=5)
    losses = run_sft(model, tok, split_problems("train"), config, seed=0)
    assert len(losses) == 20
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
    assert all(not torch.equal(before[name], p) for name, p in model.named_parameters())


def test_warmup_is_deterministic_given_seed():
    config = WarmupConfig(num_clean_steps=4, num_noisy_steps=4, batch_size=16, warmup_steps=2)
    runs = []
    for _ in range(2):
        model, tok = build_tiny_model(seed=1)
        runs.append((run_sft(model, tok, split_problems("train"), config, seed=1), model.lm_head.weight.detach()))
    assert runs[0][0] == runs[1][0]
    assert torch.equal(runs[0][1], runs[1][1])


def _always_predict(model, token_id: int):
    """Replace the LM head by one whose argmax is `token_id` at every position."""
    head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[token_id] = 1.0
    model.lm_head = head


def test_greedy_responses_stop_at_eos_and_respect_max_new_tokens():
    model, tok = build_tiny_model(seed=0)
    _always_predict(model, tok.eos_token_id)
    assert greedy_responses(model, tok, ["1+1=", "10+10="]) == ["", ""]
    _always_predict(model, tok.convert_tokens_to_ids("7"))
    assert greedy_responses(model, tok, ["1+1=", "10+10=", "5+5="], max_new_tokens=3) == ["777"] * 3


def test_ensure_base_model_caches_and_rebuilds_stale_recipe(tmp_path):
    config = WarmupConfig(num_clean_steps=3, num_noisy_steps=2, batch_size=16, warmup_steps=1, num_val_problems=8)
    path = ensure_base_model(tmp_path, seed=0, config=config)
    assert path == tmp_path / "tiny-arith-v1-seed0"
    stats = json.loads((path / DONE_FILE).read_text())
    assert stats["warmup"]["num_clean_steps"] == 3
    stamp = os.stat(path / "model.safetensors").st_mtime_ns
    assert ensure_base_model(tmp_path, seed=0, config=config) == path
    assert os.stat(path / "model.safetensors").st_mtime_ns == stamp  # reused, not retrained
    other = WarmupConfig(num_clean_steps=2, num_noisy_steps=0, batch_size=16, warmup_steps=1, num_val_problems=8)
    assert ensure_base_model(tmp_path, seed=0, config=other) == path
    assert json.loads((path / DONE_FILE).read_text())["warmup"]["num_clean_steps"] == 2
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary leftovers


def test_ensure_base_model_honours_rlsys_cache(tmp_path, monkeypatch):
    config = WarmupConfig(num_clean_steps=1, num_noisy_steps=0, batch_size=8, warmup_steps=1, num_val_problems=4)
    monkeypatch.setenv("RLSYS_CACHE", str(tmp_path))
    assert ensure_base_model(seed=2, config=config) == tmp_path / "tiny-arith-v1-seed2"


@pytest.mark.slow
def test_default_warmup_leaves_rl_headroom(base_model_dir):
    """The shipped recipe: the clean phase learns addition, the noisy phase makes the model
    mostly drop carries, so greedy accuracy lands well below what it already knows.

    Checked on the cached base model that every run of the suite uses (session fixture: built
    once per machine, ~75-130 s, instead of a second full warm-up here); its greedy accuracy is
    measured again from the saved weights, so the recorded stats must describe that model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    stats = json.loads((base_model_dir / DONE_FILE).read_text())
    assert stats["warmup"] == dataclasses.asdict(WarmupConfig()) and stats["seed"] == 0  # the shipped recipe
    assert stats["clean_phase_final_loss"] < 0.2
    assert 0.15 <= stats["val_greedy_accuracy"] <= 0.6
    model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32).eval()
    val_rows = make_arithmetic_dataset(stats["num_val_problems"], 0, "val")
    with single_torch_thread():  # as the warm-up measured it
        accuracy = greedy_accuracy(model, AutoTokenizer.from_pretrained(base_model_dir), val_rows)
    assert accuracy == pytest.approx(stats["val_greedy_accuracy"])


def _hf_greedy(model_dir, prompt_ids: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    outputs = []
    for ids in prompt_ids:
        x = torch.tensor([ids])
        out = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False,
                             max_new_tokens=max_new_tokens, pad_token_id=0)
        outputs.append(out[0, len(ids):].tolist())
    return outputs


@pytest.mark.slow
def test_vllm_greedy_matches_hf_greedy(base_model_dir):
    """vLLM (fp32, eager) loads the model directory and decodes greedily token for token like HF."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM, SamplingParams

    model_dir = base_model_dir  # the cached warmed-up base model: trained logits, no near-ties in argmax
    tok = build_tokenizer()
    prompts = [row["prompt"] for row in make_arithmetic_dataset(24, 0, "val")]
    prompt_ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    llm = LLM(model=str(model_dir), dtype="float32", max_model_len=128, enforce_eager=True, seed=0)
    try:
        outs = llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids],
                            SamplingParams(temperature=0.0, max_tokens=6))
        text_out = llm.generate(prompts[:1], SamplingParams(temperature=0.0, max_tokens=6))
    finally:
        del llm
    vllm_ids = [list(o.outputs[0].token_ids) for o in outs]
    assert vllm_ids == _hf_greedy(model_dir, prompt_ids, 6)
    assert any(ids[-1] == tok.eos_token_id for ids in vllm_ids)
    assert list(text_out[0].prompt_token_ids) == prompt_ids[0]  # vLLM's tokenizer agrees, adds no BOS

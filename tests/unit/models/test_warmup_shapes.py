"""The warm-up at a shape of rlsys.models.shapes, and the context lengths those shapes declare.

Fast CPU tests: a few warm-up steps at the "tiny" shape stand in for arith-100m on CUDA
(same code path, same directory layout); the 100M model itself is checked only by count.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from rlsys.models.shapes import QWEN2_SHAPES, num_parameters, qwen2_shape
from rlsys.models.tiny import VOCAB_SIZE, build_tiny_model
from rlsys.models.warmup import (
    DONE_FILE,
    MODEL_NAME,
    WarmupConfig,
    headroom_stats,
    model_name,
    train_base_model,
    warmup_config_for,
)

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "make_tiny_model.py"
FEW_STEPS = WarmupConfig(num_clean_steps=3, num_noisy_steps=2, batch_size=16, warmup_steps=1, num_val_problems=8)


def _script():
    spec = importlib.util.spec_from_file_location("make_tiny_model", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("shape", ["tiny", "arith-100m"])
def test_num_parameters_matches_the_built_model(shape):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    with torch.device("meta"):
        model = Qwen2ForCausalLM(Qwen2Config(**qwen2_shape(shape)))
    assert num_parameters(QWEN2_SHAPES[shape]) == sum(p.numel() for p in model.parameters())


def test_arith_100m_is_100m_on_the_character_vocabulary():
    shape = qwen2_shape("arith-100m")
    assert num_parameters(shape) >= 100_000_000
    assert shape["vocab_size"] == VOCAB_SIZE
    assert shape["hidden_size"] // shape["num_attention_heads"] == 64


def test_shapes_declare_real_context_lengths():
    # Without this a --random --shape model says 128 and vLLM refuses max_model_len 1024+.
    assert qwen2_shape("qwen2.5-1.5b")["max_position_embeddings"] >= 4096
    assert all(qwen2_shape(name)["max_position_embeddings"] >= 2048 for name in QWEN2_SHAPES)
    assert qwen2_shape("qwen2.5-7b", max_position_embeddings=8192)["max_position_embeddings"] == 8192
    assert "max_position_embeddings" not in QWEN2_SHAPES["qwen2.5-7b"]  # bench_weight_sync passes its own
    with pytest.raises(ValueError, match="qwen9"):
        qwen2_shape("qwen9")


def test_tiny_default_recipe_and_name_are_unchanged():
    # The cached base model is reused only if name and recipe match: these must never drift.
    assert warmup_config_for(None) == WarmupConfig()
    assert (WarmupConfig().lr, WarmupConfig().carryless_prob, WarmupConfig().num_steps) == (1e-3, 0.75, 1600)
    assert model_name(None) == MODEL_NAME == "tiny-arith-v1"
    assert model_name("arith-100m") == "arith-v1-arith-100m"
    assert warmup_config_for("arith-100m").lr < WarmupConfig().lr
    assert warmup_config_for("qwen2.5-0.5b") == WarmupConfig()


def test_warmup_at_a_shape_writes_a_loadable_trained_directory(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "base"
    stats = train_base_model(out, seed=0, config=FEW_STEPS, shape="tiny", device="cpu")
    assert json.loads((out / DONE_FILE).read_text()) == stats
    assert (stats["model"], stats["shape"], stats["device"], stats["compute_dtype"]) == (
        "arith-v1-tiny", "tiny", "cpu", "float32")
    assert stats["num_parameters"] == num_parameters(QWEN2_SHAPES["tiny"])
    for key in ("val_greedy_accuracy", "val_greedy_accuracy_after_clean_phase", "val_sampled_accuracy"):
        assert 0.0 <= stats[key] <= 1.0
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.dtype == torch.float32 and (out / "model.safetensors").exists()
    assert (model.config.vocab_size, model.config.max_position_embeddings) == (512, 2048)
    assert tokenizer.model_max_length == 2048
    fresh, _ = build_tiny_model(0, **qwen2_shape("tiny"))
    assert not torch.equal(fresh.model.layers[0].mlp.up_proj.weight, model.model.layers[0].mlp.up_proj.weight)
    ids = torch.tensor([tokenizer("12+7=", add_special_tokens=False)["input_ids"]])
    assert model(input_ids=ids).logits.shape == (1, 5, 512)


def test_headroom_stats_of_a_model_that_always_answers_carry_less():
    """A model whose head always emits the tokens of "15": right on no row, carry-less on 58+67."""
    model, tok = build_tiny_model(seed=0)
    digits = [tok.convert_tokens_to_ids("1"), tok.convert_tokens_to_ids("5"), tok.eos_token_id]

    def forward(input_ids, **_):
        steps = input_ids.shape[1] - 6  # both prompts are six characters
        logits = torch.full((input_ids.shape[0], input_ids.shape[1], VOCAB_SIZE), -1e4)
        logits[:, -1, digits[min(steps, 2)]] = 0.0
        return type("Out", (), {"logits": logits})()

    model.forward = forward
    rows = [{"prompt": "58+67=", "ground_truth": "125"}, {"prompt": "21+34=", "ground_truth": "55"}]
    stats = headroom_stats(model, tok, rows, seed=0, num_samples=2)
    assert stats["val_greedy_accuracy"] == 0.0 and stats["val_sampled_accuracy"] == 0.0
    assert stats["val_carry_fraction"] == 0.5
    assert stats["val_greedy_carryless_rate_on_carry"] == 1.0
    assert stats["val_pass_at_2_where_greedy_wrong"] == 0.0


def test_make_tiny_model_random_shape_context_length(tmp_path, monkeypatch):
    script = _script()
    monkeypatch.setattr("sys.argv", ["make_tiny_model.py", "--random", "--shape", "tiny", "--out", str(tmp_path / "r"),
                                     "--max-position-embeddings", "4096"])
    assert script.main() == 0
    assert json.loads((tmp_path / "r" / "config.json").read_text())["max_position_embeddings"] == 4096
    monkeypatch.setattr("sys.argv", ["make_tiny_model.py", "--shape", "arith-100m", "--device", "cuda"])
    with pytest.raises(ValueError, match="--out"):
        script.main()  # a shape's warm-up is never cached

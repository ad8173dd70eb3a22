"""Qwen2 architecture shapes (the `config.json` values of released checkpoints, plus one of
our own), for models of realistic size: weight-sync benchmarks, GPU trainer runs, and a
~100M-parameter arithmetic base model.

No weights are downloaded; `scripts/make_tiny_model.py --random --shape qwen2.5-0.5b` writes a
random-weight HF directory of that shape with the embedded character tokenizer (its ids are
a prefix of the model's vocabulary; ids the tokenizer lacks decode to nothing).
`scripts/make_tiny_model.py --shape arith-100m --device cuda --out DIR` warms that shape up
into an arithmetic base model instead (rlsys.models.warmup).
"""

from __future__ import annotations

from rlsys.models.tiny import VOCAB_SIZE

QWEN2_SHAPES: dict[str, dict] = {
    "tiny": dict(hidden_size=128, num_hidden_layers=2, intermediate_size=256, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=512, tie_word_embeddings=True),
    # ~104M parameters on exactly the character tokenizer's vocabulary (head_dim 64): the
    # smallest "real-size" base model that rlsys's own warm-up can make (GPU acceptance runs).
    "arith-100m": dict(hidden_size=768, num_hidden_layers=12, intermediate_size=3072,
                       num_attention_heads=12, num_key_value_heads=4, vocab_size=VOCAB_SIZE,
                       tie_word_embeddings=False),
    "qwen2.5-0.5b": dict(hidden_size=896, num_hidden_layers=24, intermediate_size=4864,
                         num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                         tie_word_embeddings=True),
    "qwen2.5-1.5b": dict(hidden_size=1536, num_hidden_layers=28, intermediate_size=8960,
                         num_attention_heads=12, num_key_value_heads=2, vocab_size=151936,
                         tie_word_embeddings=True),
    "qwen2.5-7b": dict(hidden_size=3584, num_hidden_layers=28, intermediate_size=18944,
                       num_attention_heads=28, num_key_value_heads=4, vocab_size=152064,
                       tie_word_embeddings=False),
}

# The context length a built model's config.json declares (vLLM refuses a max_model_len above
# it). Kept apart from QWEN2_SHAPES, whose entries are pure architecture (bench_weight_sync
# passes its own). The embedded tiny model without a shape keeps tiny.MAX_POSITION_EMBEDDINGS.
SHAPE_MAX_POSITION_EMBEDDINGS: dict[str, int] = {
    "tiny": 2048,
    "arith-100m": 2048,
    "qwen2.5-0.5b": 32768,
    "qwen2.5-1.5b": 32768,
    "qwen2.5-7b": 32768,
}


def qwen2_shape(name: str, max_position_embeddings: int | None = None) -> dict:
    """Qwen2Config keyword arguments of shape `name`: its architecture plus
    max_position_embeddings (the shape's default unless given)."""
    if name not in QWEN2_SHAPES:
        raise ValueError(f"unknown model shape {name!r}; known: {sorted(QWEN2_SHAPES)}")
    positions = max_position_embeddings or SHAPE_MAX_POSITION_EMBEDDINGS[name]
    return dict(QWEN2_SHAPES[name], max_position_embeddings=positions)


def num_parameters(shape: dict) -> int:
    """Parameter count of a Qwen2ForCausalLM with these config values (q/k/v biases included)."""
    hidden, inter, vocab = shape["hidden_size"], shape["intermediate_size"], shape["vocab_size"]
    head_dim = hidden // shape["num_attention_heads"]
    kv = shape["num_key_value_heads"] * head_dim
    attention = hidden * hidden + hidden + 2 * (hidden * kv + kv) + hidden * hidden
    per_layer = attention + 3 * hidden * inter + 2 * hidden  # + two RMSNorm weights
    embeddings = vocab * hidden * (1 if shape["tie_word_embeddings"] else 2)
    return shape["num_hidden_layers"] * per_layer + embeddings + hidden

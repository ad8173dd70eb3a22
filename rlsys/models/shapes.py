"""Qwen2 architecture shapes (the `config.json` values of released checkpoints), for
random-weight models of realistic size: weight-sync benchmarks and GPU trainer runs.

No weights are downloaded; `scripts/make_tiny_model.py --random --shape qwen2.5-0.5b` writes a
random-weight HF directory of that shape with the embedded character tokenizer (its ids are
a prefix of the model's vocabulary; ids the tokenizer lacks decode to nothing).
"""

from __future__ import annotations

QWEN2_SHAPES: dict[str, dict] = {
    "tiny": dict(hidden_size=128, num_hidden_layers=2, intermediate_size=256, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=512, tie_word_embeddings=True),
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


def qwen2_shape(name: str) -> dict:
    if name not in QWEN2_SHAPES:
        raise ValueError(f"unknown model shape {name!r}; known: {sorted(QWEN2_SHAPES)}")
    return dict(QWEN2_SHAPES[name])

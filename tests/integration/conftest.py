"""Shared fixtures for integration tests: a throwaway tiny Qwen2 model directory.

`build_tiny_qwen2_dir` writes a randomly initialised 2-layer Qwen2 (fp32, head_dim 32 so the
CPU attention backend accepts it, tied embeddings like Qwen2.5-0.5B) and a word-level
tokenizer built with `tokenizers` into a directory that both `transformers` and vLLM load.
It stays local to the tests until `rlsys.models.tiny` is in place.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_VOCAB_SIZE = 512  # a multiple of 64, so vLLM's vocab padding is a no-op


def _build_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<eos>", "<unk>"]
    words = [f"w{i}" for i in range(TINY_VOCAB_SIZE - len(specials))]
    vocab = {tok: i for i, tok in enumerate(specials + words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )


def build_tiny_qwen2_dir(path: Path, seed: int = 0) -> Path:
    """Write a tiny random Qwen2 model + tokenizer to `path` and return it."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = _build_tokenizer()
    config = Qwen2Config(
        vocab_size=TINY_VOCAB_SIZE,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    # Random init with std 0.02 gives near-uniform next-token distributions; a larger
    # scale makes greedy choices well separated, so HF and vLLM agree token for token.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim >= 2:
                param.normal_(0.0, 0.15)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_qwen2_dir(tmp_path_factory) -> Path:
    return build_tiny_qwen2_dir(tmp_path_factory.mktemp("tiny_qwen2"))

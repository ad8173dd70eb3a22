"""Shared fixtures for integration tests: a throwaway tiny Qwen2 model directory.

`build_tiny_qwen2_dir` writes `rlsys.models.tiny`'s random 2-layer Qwen2 (fp32, head_dim 32 so
the CPU attention backend accepts it), here with tied embeddings like Qwen2.5-0.5B and a
512-token vocabulary (the character tokenizer covers its first 128 ids; the tests feed token
ids directly), into a directory that both `transformers` and vLLM load.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_VOCAB_SIZE = 512  # a multiple of 64, so vLLM's vocab padding is a no-op


def build_tiny_qwen2_dir(path: Path, seed: int = 0) -> Path:
    """Write a tiny random Qwen2 model + tokenizer to `path` and return it."""
    import torch

    from rlsys.models.tiny import build_tiny_model, save_model_dir

    model, tokenizer = build_tiny_model(seed, vocab_size=TINY_VOCAB_SIZE, tie_word_embeddings=True,
                                        max_position_embeddings=256)
    # Random init with std 0.02 gives near-uniform next-token distributions; a larger
    # scale makes greedy choices well separated, so HF and vLLM agree token for token.
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(seed)
        for param in model.parameters():
            if param.ndim >= 2:
                param.normal_(0.0, 0.15)
    return save_model_dir(model, tokenizer, path)


@pytest.fixture(scope="session")
def tiny_qwen2_dir(tmp_path_factory) -> Path:
    return build_tiny_qwen2_dir(tmp_path_factory.mktemp("tiny_qwen2"))

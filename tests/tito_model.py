"""A tiny random Qwen2 whose tokenizer has BPE merges, for token-in/token-out tests.

The character tokenizer of rlsys.models.tiny has no merges, so decode -> encode is the
identity there and cannot show re-tokenisation drift. This one adds a merged token for every
pair of the letters a..t (400 merges, 512 ids): a model that samples "ab" as "a", "b" (or
"ab", "cd" as a pair of merged tokens) produces ids that decode -> encode changes.
"""

from __future__ import annotations

from pathlib import Path

LETTERS = "abcdefghijklmnopqrst"
VOCAB_SIZE = 512


def build_merges_tokenizer():
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from rlsys.models.tiny import BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, UNK_TOKEN, build_vocab

    vocab = {tok: i for tok, i in build_vocab().items() if not tok.startswith("<unused_")}
    merges = [(x, y) for x in LETTERS for y in LETTERS]
    for x, y in merges:
        vocab[x + y] = len(vocab)
    for k in range(VOCAB_SIZE - len(vocab)):
        vocab[f"<unused_{k}>"] = len(vocab)
    assert len(vocab) == VOCAB_SIZE
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD_TOKEN, eos_token=EOS_TOKEN,
                                   bos_token=BOS_TOKEN, unk_token=UNK_TOKEN, model_max_length=256,
                                   clean_up_tokenization_spaces=False)


def build_merges_model_dir(path: Path, seed: int = 0) -> Path:
    """A random tiny Qwen2 (vocab 512, weights std 0.15 as tests/integration/conftest.py) + the merges tokenizer."""
    import torch

    from rlsys.models.tiny import build_tiny_model, save_model_dir

    model, _ = build_tiny_model(seed, vocab_size=VOCAB_SIZE, max_position_embeddings=256)
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(seed)
        for param in model.parameters():
            if param.ndim >= 2:
                param.normal_(0.0, 0.15)
    tokenizer = build_merges_tokenizer()
    save_model_dir(model, tokenizer, path)
    from transformers import AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(path)  # what the rollout worker and the trainer load
    ids = loaded("abcd", add_special_tokens=False)["input_ids"]
    assert len(ids) == 2, f"the saved tokenizer lost its merges: 'abcd' -> {ids}"
    return Path(path)

"""The embedded tiny model: a character-level tokenizer and a small Qwen2, no downloads.

`build_tokenizer()` makes a `PreTrainedTokenizerFast` from a `tokenizers` byte-level BPE
with a one-character-per-token vocabulary (printable ASCII), so "12+7=" is five tokens.
`build_tiny_model_dir(path, seed)` writes a randomly initialised `Qwen2ForCausalLM` (fp32,
safetensors, ~0.3M parameters, untied embeddings) plus that tokenizer: a directory that both
`transformers.from_pretrained` and `vllm.LLM(model=path)` load. `rlsys.models.warmup` turns
it into the RL base model.

The shapes keep vLLM's CPU and GPU attention backends happy: head_dim 32, two KV heads,
and a vocabulary of 128 entries (a multiple of 64, so vLLM's vocab padding changes nothing).

    python scripts/make_tiny_model.py --out /tmp/tiny --random   # random weights only
"""

from __future__ import annotations

from pathlib import Path

PAD_TOKEN, EOS_TOKEN, BOS_TOKEN, UNK_TOKEN = "<pad>", "<eos>", "<bos>", "<unk>"
SPECIAL_TOKENS = (PAD_TOKEN, EOS_TOKEN, BOS_TOKEN, UNK_TOKEN)
# Every printable ASCII character plus newline and tab: one token each.
CHARACTERS = tuple(chr(c) for c in range(32, 127)) + ("\n", "\t")
VOCAB_SIZE = 128  # len(SPECIAL_TOKENS + CHARACTERS) = 101, padded with unused slots
MAX_POSITION_EMBEDDINGS = 128


def byte_level_symbol(char: str) -> str:
    """The GPT-2 byte-level alphabet symbol for one ASCII character.

    Printable ASCII 33..126 maps to itself; bytes 0..32 (space, newline, tab, ...) map to
    chr(256 + byte), e.g. " " -> "Ġ", "\n" -> "Ċ".
    """
    code = ord(char)
    assert code < 128, "only ASCII characters are in the tiny vocabulary"
    return char if 33 <= code <= 126 else chr(256 + code)


def build_vocab() -> dict[str, int]:
    """Token -> id: special tokens first (pad=0, eos=1, bos=2, unk=3), then one byte-level
    symbol per character of CHARACTERS, then `<unused_k>` fillers up to VOCAB_SIZE."""
    tokens = list(SPECIAL_TOKENS) + [byte_level_symbol(c) for c in CHARACTERS]
    assert len(tokens) <= VOCAB_SIZE, "raise VOCAB_SIZE (keep it a multiple of 64)"
    tokens += [f"<unused_{k}>" for k in range(VOCAB_SIZE - len(tokens))]
    return {tok: i for i, tok in enumerate(tokens)}


def build_tokenizer():
    """Character-level fast tokenizer: a byte-level BPE whose vocabulary is single characters
    and which has no merges, so every character is one token.

    Why byte-level BPE and not a WordLevel model: transformers 5 loads the tokenizer of any
    `model_type=qwen2` checkpoint through `Qwen2Tokenizer`, which rebuilds a byte-level BPE
    (NFC normaliser, Qwen2 split, byte-level alphabet, no unk) from the saved vocab and
    merges and ignores the rest of tokenizer.json. With single-character byte-level vocab
    entries and no merges the split cannot change the ids, so `build_tokenizer()`,
    `AutoTokenizer.from_pretrained` (transformers 4 or 5) and vLLM agree. Characters outside
    CHARACTERS are dropped (no unk, as in Qwen2). No BOS/EOS is added automatically.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(vocab=build_vocab(), merges=[], unk_token=None, fuse_unk=False,
                               byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD_TOKEN,
        eos_token=EOS_TOKEN,
        bos_token=BOS_TOKEN,
        unk_token=UNK_TOKEN,
        model_max_length=MAX_POSITION_EMBEDDINGS,
        clean_up_tokenization_spaces=False,
    )


def tiny_qwen2_config(tokenizer, **overrides):
    """Qwen2Config for the tiny model (~0.3M parameters, head_dim 32). Keyword overrides replace defaults."""
    from transformers import Qwen2Config

    kwargs = dict(
        vocab_size=VOCAB_SIZE,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,  # head_dim = 128 / 4 = 32
        num_key_value_heads=2,
        max_position_embeddings=MAX_POSITION_EMBEDDINGS,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        torch_dtype="float32",
    )
    kwargs.update(overrides)
    return Qwen2Config(**kwargs)


def build_tiny_model(seed: int = 0, **config_overrides):
    """(model, tokenizer): a freshly initialised fp32 Qwen2ForCausalLM (HF default init, std 0.02)."""
    import torch
    from transformers import Qwen2ForCausalLM

    tokenizer = build_tokenizer()
    config = tiny_qwen2_config(tokenizer, **config_overrides)
    tokenizer.model_max_length = config.max_position_embeddings  # saved with it: no length warnings
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = Qwen2ForCausalLM(config).to(torch.float32)
    finally:
        torch.random.set_rng_state(generator_state)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model, tokenizer


def save_model_dir(model, tokenizer, path: str | Path) -> Path:
    """Write model (safetensors, fp32) and tokenizer into `path`; return it."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


def build_tiny_model_dir(path: str | Path, seed: int = 0, dtype: str = "float32", **config_overrides) -> Path:
    """Write a random-weight Qwen2 (tiny unless overridden) + tokenizer to `path` (HF and vLLM loadable)."""
    import torch

    model, tokenizer = build_tiny_model(seed, torch_dtype=dtype, **config_overrides)
    return save_model_dir(model.to(getattr(torch, dtype)), tokenizer, path)

"""Causal attention for the trainer's packed micro-batches, on one chosen SDPA kernel.

Packed rows are right-padded (`rlsys.workers.micro_batches`), so the decoder needs no padding
mask and attention is plain causal. HF's "sdpa" path leaves the kernel to PyTorch, and under
torch.compile that choice is made at trace time: on an H200 the compiled Qwen2.5-1.5B layers
ran the memory-efficient kernel at ~50 TFLOP/s (24% of the update's GPU time,
docs/benchmarks.md). `use_attention_backend` registers an HF attention function that runs
`scaled_dot_product_attention(is_causal=True)` on exactly one backend, outside the compiled
graph (`torch.compiler.disable`: one graph break per layer), and errors when that backend
cannot run the inputs instead of silently taking another.

Backends (`actor.attention_backend`, also used by the reference): `sdpa` (HF's default call,
PyTorch picks), `flash`, `cudnn`, `efficient`, `math`; `auto` = flash on CUDA, sdpa on CPU.
Grouped-query attention passes `enable_gqa=True` where the backend takes it, else the key and
value heads are repeated first. With a mask (callers other than the packed scorer) the
function defers to HF's SDPA path.
"""

from __future__ import annotations

import torch

BACKENDS = ("sdpa", "flash", "cudnn", "efficient", "math")


def check_backend_name(name: str, key: str = "actor.attention_backend") -> None:
    """ValueError naming `key` unless `name` is auto or one of BACKENDS."""
    if name != "auto" and name not in BACKENDS:
        raise ValueError(f"{key}={name!r}: expected auto or one of {', '.join(BACKENDS)}")


def resolve_backend(name: str, device: torch.device, key: str = "actor.attention_backend") -> str:
    """`auto` -> flash on CUDA, sdpa elsewhere; anything else must be one of BACKENDS."""
    check_backend_name(name, key)
    if name == "auto":
        return "flash" if device.type == "cuda" else "sdpa"
    return name


def _sdp_backend(name: str):
    from torch.nn.attention import SDPBackend

    return {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}[name]


def _repeat_heads(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(b, kv_heads, s, d) -> (b, kv_heads * groups, s, d), each kv head repeated `groups` times."""
    b, h, s, d = x.shape
    return x[:, :, None].expand(b, h, groups, s, d).reshape(b, h * groups, s, d)


_GQA: dict = {}  # (backend, device type) -> whether enable_gqa ran


def causal_attention(query, key, value, backend: str, scale: float | None = None) -> torch.Tensor:
    """softmax(q k^T * scale + causal) v on one SDPA backend.

    query (b, heads, s, d), key/value (b, kv_heads, s, d), heads a multiple of kv_heads.
    Returns (b, s, heads, d), contiguous (the layout HF's o_proj reads)."""
    from torch.nn.attention import sdpa_kernel

    groups = query.shape[1] // key.shape[1]
    with sdpa_kernel([_sdp_backend(backend)]):
        if groups > 1 and _GQA.get((backend, query.device.type), True):
            try:
                out = torch.nn.functional.scaled_dot_product_attention(
                    query, key, value, is_causal=True, scale=scale, enable_gqa=True)
                _GQA[(backend, query.device.type)] = True
                return out.transpose(1, 2).contiguous()
            except RuntimeError:  # this backend takes no enable_gqa: repeat the kv heads instead
                _GQA[(backend, query.device.type)] = False
        if groups > 1:
            key, value = _repeat_heads(key, groups), _repeat_heads(value, groups)
        try:
            out = torch.nn.functional.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scale)
        except RuntimeError as error:
            raise RuntimeError(
                f"actor.attention_backend={backend}: that SDPA kernel cannot run these inputs on "
                f"{query.device.type} ({query.dtype}, shape {tuple(query.shape)}, head dim {query.shape[-1]}); "
                "choose another backend or auto") from error
    return out.transpose(1, 2).contiguous()


def _hf_attention_fn(backend: str):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    @torch.compiler.disable
    def attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
        causal = getattr(module, "is_causal", True) and query.shape[2] == key.shape[2] and query.shape[2] > 1
        if attention_mask is not None or dropout or not causal:
            return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                          scaling=scaling, **kwargs)
        return causal_attention(query, key, value, backend, scaling), None

    return attention


def use_attention_backend(model: torch.nn.Module, backend: str) -> None:
    """Make `model` (a HF model) run its attention on `backend` (after `resolve_backend`);
    `sdpa` leaves HF's SDPA path in place."""
    if backend == "sdpa":
        return
    from transformers import AttentionInterface

    # (HF treats any implementation name containing "flash" as a flash-attn package to import)
    name = f"rlsys_causal_{backend.replace('flash', 'fa')}"
    AttentionInterface.register(name, _hf_attention_fn(backend))
    model.set_attn_implementation(name)

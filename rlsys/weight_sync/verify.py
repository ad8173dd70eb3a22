"""Exact fingerprints of tensors, to check that weights arrived and loaded unchanged.

`fingerprint(t)` reads the tensor's raw bytes as 16-bit signed words `w_i` (8-bit for odd
sizes) and returns two integers, computed exactly (no floating point, no overflow):

    s1 = sum_i w_i                 s2 = sum_i ((i mod 65521) + 1) * w_i      (both mod 2**61 - 1)

Integer sums do not depend on reduction order, so sender and receiver get identical values
on any device or thread count, and equality is exact (no tolerance). Any change to a single
word changes `s1`; swapping two different words changes `s2` unless their positions differ
by a multiple of 65521. It is a checksum against transport and packing bugs, not a
cryptographic hash.

What the weight-sync path verifies (see docs/weight_sync.md):
1. before loading, every tensor a receiver *received* is fingerprinted and compared with the
   sender's fingerprint of the same name (catches corruption or mis-packing in transit);
2. after loading, every model parameter vLLM keeps unchanged under the HF name (same name,
   shape and dtype, e.g. embeddings and norms at TP=1) is fingerprinted and compared too;
   fused or repacked parameters (qkv_proj, gate_up_proj, CPU oneDNN-packed linears) cannot
   be read back as the HF tensors and are checked only by the loader's own coverage check.
"""

from __future__ import annotations

from typing import Iterable

import torch

_CHUNK_WORDS = 1 << 22  # |chunk sum| < 2**22 * 2**15 * 65521 < 2**53: exact in int64
_WEIGHT_PERIOD = 65521
_MODULUS = (1 << 61) - 1


class WeightSyncMismatch(RuntimeError):
    """A received or loaded tensor differs from what the sender sent."""

    def __init__(self, name: str, rank: int | None = None, stage: str = "received"):
        where = f" on receiver rank {rank}" if rank is not None else ""
        super().__init__(f"weight-sync mismatch for parameter {name!r}{where} ({stage})")
        self.name = name
        self.rank = rank
        self.stage = stage


def _words(t: torch.Tensor) -> torch.Tensor:
    flat = t.detach().contiguous().reshape(-1)
    raw = flat.view(torch.uint8) if flat.dtype != torch.uint8 else flat
    if raw.numel() % 2 == 0:
        return raw.view(torch.int16)
    return raw


@torch.no_grad()
def fingerprint(t: torch.Tensor) -> tuple[int, int]:
    """`(s1, s2)` of the tensor's bytes, as defined in the module docstring."""
    words = _words(t)
    s1 = s2 = 0
    for start in range(0, words.numel(), _CHUNK_WORDS):
        chunk = words[start : start + _CHUNK_WORDS].to(torch.int64)
        pos = torch.arange(start, start + chunk.numel(), dtype=torch.int64, device=chunk.device)
        weights = pos.remainder_(_WEIGHT_PERIOD).add_(1)
        s1 += int(chunk.sum().item())
        s2 += int((chunk * weights).sum().item())
    return s1 % _MODULUS, s2 % _MODULUS

def fingerprints(named_tensors: Iterable[tuple[str, torch.Tensor]]) -> dict[str, list[int]]:
    """Fingerprint per name, as plain lists (they cross vLLM's msgpack RPC)."""
    return {name: list(fingerprint(t)) for name, t in named_tensors}


def first_mismatch(
    expected: dict[str, list[int]], named_tensors: Iterable[tuple[str, torch.Tensor]]
) -> str | None:
    """Name of the first tensor whose fingerprint differs from `expected[name]`, else None.

    Raises ValueError for a name the sender did not fingerprint.
    """
    for name, tensor in named_tensors:
        if name not in expected:
            raise ValueError(f"no sender fingerprint for received tensor {name!r}")
        if list(fingerprint(tensor)) != list(expected[name]):
            return name
    return None


def corrupt_for_test(tensor: torch.Tensor) -> None:
    """Flip one element in place (test hook for the negative verification test)."""
    flat = tensor.view(-1)
    flat[0] = flat[0] + 1 if flat.dtype.is_floating_point else flat[0] ^ 1

"""Masked reductions over `(batch, response_len)` tensors.

`mask` is 1 (or True) on valid response tokens and 0 on padding / non-trained tokens. Masked
positions never contribute, whatever they hold (the reductions select with `torch.where`, so even
NaN or inf there cannot leak into a result).
"""

from __future__ import annotations

import torch


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """sum(x * m) over all entries (dim=None, 0-dim result) or along `dim`.

    x, mask: same shape, e.g. (batch, response_len)."""
    x = torch.where(mask.bool(), x, torch.zeros_like(x))
    return x.sum() if dim is None else x.sum(dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """sum(x * m) / sum(m) over all entries or along `dim`; 0 where the mask is empty.

    x, mask: same shape, e.g. (batch, response_len); dim=-1 gives a per-sequence mean (batch,)."""
    mask_f = mask.to(x.dtype) if x.is_floating_point() else mask.float()
    count = mask_f.sum() if dim is None else mask_f.sum(dim)
    return masked_sum(x, mask, dim) / count.clamp(min=1.0)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of the valid entries of x, as a 0-dim tensor.

    var = sum(m * (x - mu)^2) / (n - 1)  with n = sum(m)  (unbiased, Bessel's correction),
    or / n when `unbiased=False` or n <= 1 (a single valid entry has variance 0)."""
    mean = masked_mean(x, mask)
    sq_sum = masked_sum((x - mean) ** 2, mask)
    n = mask.float().sum()
    denom = n - 1 if (unbiased and n > 1) else n.clamp(min=1.0)
    return sq_sum / denom


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """Normalize x over its valid entries: (x - mu) / sqrt(var + 1e-8), var unbiased.

    With shift_mean=False the mean is added back: (x - mu) / sqrt(var + 1e-8) + mu.
    x, mask: (batch, response_len) -> (batch, response_len), 0 at masked positions."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    whitened = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask.bool(), whitened, torch.zeros_like(whitened))

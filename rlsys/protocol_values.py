"""What DataProto is built from: its error type, its global switches, metric lists, and the
row and value helpers its operations share (index normalising, equality of odd values,
meta_info merging on concat, compact tensors for pickling). Public names are re-exported by
`rlsys.protocol`, which is where users import them from."""

from __future__ import annotations

import os
from typing import Optional

import numpy as np
import torch
from tensordict import TensorDict


class DataProtoError(ValueError, AssertionError):
    """A misuse of DataProto (sizes, keys, conflicting meta_info). A ValueError, as our code catches;
    also an AssertionError, because verl asserts in these places and verl code catches that."""


class _DataProtoConfigMeta(type):
    """`DataProtoConfig.auto_padding` is a class-level switch (verl's spelling), also set by env."""

    auto_padding_key = "_verl_auto_padding"  # verl's meta_info key, so flags set by verl code carry over
    _auto_padding = False

    @property
    def auto_padding(cls) -> bool:
        by_env = any(os.environ.get(k, "").upper() in ("1", "TRUE") for k in ("RLSYS_AUTO_PADDING", "VERL_AUTO_PADDING"))
        return by_env or cls._auto_padding

    @auto_padding.setter
    def auto_padding(cls, enabled: bool) -> None:
        if not isinstance(enabled, bool):
            raise DataProtoError(f"DataProtoConfig.auto_padding must be a bool, got {enabled!r}")
        cls._auto_padding = enabled


class DataProtoConfig(metaclass=_DataProtoConfigMeta):
    """Global DataProto switches. `auto_padding` lets `chunk` make unequal chunks (verl's meaning).
    The group always pads DP_COMPUTE_PROTO inputs to the world size, whatever this says."""


class MetricValues(list):
    """One metric's values from the parts of a concat, in part order (verl's dict-of-lists form).
    `float()` gives their mean, so code that logged one rank's number now logs all ranks' mean."""

    def __float__(self) -> float:
        return float(np.mean([float(v) for v in self])) if self else float("nan")


def _merge_meta_info(parts: list) -> dict:
    """verl's concat rule: "metrics" of every part -> {name: [value per part]}; other keys must agree."""
    merged, metric_dicts = {}, []
    for i, part in enumerate(parts):
        for key, value in part.meta_info.items():
            if key == "metrics":
                if value is not None:
                    metric_dicts.extend(value if isinstance(value, list) else [value])
            elif key not in merged:
                merged[key] = value
            elif not _values_equal(merged[key], value):
                raise DataProtoError(f"concat: Conflicting values for meta_info key {key!r}: "
                                     f"{merged[key]!r:.60} (earlier parts) vs {value!r:.60} (part {i})")
    if metric_dicts:
        names = list(metric_dicts[0])
        for j, metrics in enumerate(metric_dicts[1:], start=1):
            if set(metrics) != set(names):
                raise DataProtoError(f"concat: metrics dict {j} has keys {sorted(metrics)}, "
                                     f"but the first has {sorted(names)}")
        merged["metrics"] = {name: MetricValues(m[name] for m in metric_dicts) for name in names}
    return merged


def _as_object_array(values) -> np.ndarray:
    """Lists/tuples become 1-D object arrays (one element per row); arrays are kept as they are."""
    if isinstance(values, np.ndarray):
        return values
    arr = np.empty(len(values), dtype=object)
    arr[:] = list(values)
    return arr


def _values_equal(a, b) -> bool:
    """Equality that also works for tensors, arrays and (object arrays of) objects with odd `==`."""
    if a is b:
        return True
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape \
            and a.device == b.device and torch.equal(a, b)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            return False
        try:
            return bool(np.array_equal(a, b))
        except (ValueError, TypeError):  # object arrays holding arrays: compare one by one
            return all(_values_equal(x, y) for x, y in zip(a.ravel(), b.ravel()))
    try:
        return bool(a == b)
    except (ValueError, TypeError, RuntimeError):
        return False


def _stack_rows(key, rows: np.ndarray) -> np.ndarray:
    """A 1-D object array whose rows are equal-length sequences -> a 2-D object array."""
    lengths = {len(r) if isinstance(r, (list, tuple, np.ndarray)) else None for r in rows}
    if len(lengths) != 1 or None in lengths:
        raise DataProtoError(f"unfold_column_chunks: non_tensor_batch[{key!r}] rows must be sequences of one length")
    out = np.empty((len(rows), lengths.pop()), dtype=object)
    for i, row in enumerate(rows):
        out[i, :] = list(row)
    return out


def _leaf_keys(batch: Optional[TensorDict]) -> list:
    """Tensor keys of a TensorDict; nested ones as tuples ('outer', 'inner')."""
    return [] if batch is None else list(batch.keys(include_nested=True, leaves_only=True))


def _compact(t: torch.Tensor) -> torch.Tensor:
    """The tensor on a storage of exactly its own size (a view of a big batch would pickle it all)."""
    if t.is_contiguous() and t.storage_offset() == 0 and \
            t.untyped_storage().nbytes() == t.numel() * t.element_size():
        return t
    return t.clone(memory_format=torch.contiguous_format)


def _normalize_rows(index, num_rows: int) -> np.ndarray:
    """A list / numpy array / torch tensor of int positions or a bool mask -> int64 positions."""
    if isinstance(index, torch.Tensor):
        index = index.detach().cpu().numpy()
    index = np.asarray(index)
    if index.dtype == bool:
        if index.shape != (num_rows,):
            raise DataProtoError(f"bool mask has shape {index.shape}, but the DataProto has {num_rows} rows")
        return np.nonzero(index)[0]
    if index.size == 0:
        return np.zeros(0, dtype=np.int64)
    if not np.issubdtype(index.dtype, np.integer) or index.ndim != 1:
        raise DataProtoError(f"row index must be a 1-D int or bool sequence, got dtype {index.dtype}, shape {index.shape}")
    return index.astype(np.int64)


def _is_int(index) -> bool:
    if isinstance(index, torch.Tensor):
        return index.ndim == 0 and not index.is_floating_point() and index.dtype != torch.bool
    return isinstance(index, (int, np.integer)) and not isinstance(index, (bool, np.bool_))

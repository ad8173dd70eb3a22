"""DataProto: the batch that moves between the driver and the workers.

A `DataProto` is three things with one batch dimension N:
  batch            tensordict.TensorDict, batch_size [N]   (token ids, masks, log-probs, ...)
  non_tensor_batch dict[str, np.ndarray of dtype object]   (uids, ground truths, texts, ...)
  meta_info        dict                                    (flags and settings for the call)
Operations keep rows aligned across the three. Pickling sends each tensor as one contiguous
buffer, so Ray moves a batch without per-element Python work.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch
from tensordict import TensorDict

__all__ = ["DataProto", "DataProtoItem", "DataProtoFuture", "pad_dataproto_to_divisor", "unpad_dataproto"]


def _as_object_array(values) -> np.ndarray:
    if isinstance(values, np.ndarray) and values.dtype == object:
        return values
    arr = np.empty(len(values), dtype=object)
    arr[:] = list(values)
    return arr


def _index_rows(arr: np.ndarray, index) -> np.ndarray:
    if isinstance(index, torch.Tensor):
        index = index.cpu().numpy()
    return arr[index]


@dataclass
class DataProtoItem:
    """One row of a DataProto."""

    batch: Optional[TensorDict] = None
    non_tensor_batch: dict = field(default_factory=dict)
    meta_info: dict = field(default_factory=dict)


@dataclass
class DataProto:
    batch: Optional[TensorDict] = None
    non_tensor_batch: dict = field(default_factory=dict)
    meta_info: dict = field(default_factory=dict)

    def __post_init__(self):
        self.check_consistency()

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_dict(cls, tensors: Optional[dict] = None, non_tensors: Optional[dict] = None,
                  meta_info: Optional[dict] = None) -> "DataProto":
        tensors, non_tensors = tensors or {}, non_tensors or {}
        batch = None
        if tensors:
            first_key = next(iter(tensors))
            size = tensors[first_key].shape[0]
            for key, value in tensors.items():
                if not isinstance(value, torch.Tensor):
                    raise ValueError(f"from_dict: tensors[{key!r}] is {type(value).__name__}, not a torch.Tensor")
                if value.shape[0] != size:
                    raise ValueError(
                        f"from_dict: tensor {key!r} has batch size {value.shape[0]}, expected {size} (from {first_key!r})"
                    )
            batch = TensorDict(dict(tensors), batch_size=[size])
        non = {k: _as_object_array(v) for k, v in non_tensors.items()}
        return cls(batch=batch, non_tensor_batch=non, meta_info=dict(meta_info or {}))

    @classmethod
    def from_single_dict(cls, data: dict, meta_info: Optional[dict] = None) -> "DataProto":
        tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
        non_tensors = {k: v for k, v in data.items() if not isinstance(v, torch.Tensor)}
        for key, value in non_tensors.items():
            if not isinstance(value, (np.ndarray, list, tuple)):
                raise ValueError(f"from_single_dict: {key!r} is {type(value).__name__}; expected tensor, ndarray or list")
        return cls.from_dict(tensors, non_tensors, meta_info)

    def check_consistency(self) -> None:
        n = None if self.batch is None else self.batch.batch_size[0] if len(self.batch.batch_size) else None
        if self.batch is not None and len(self.batch.batch_size) != 1:
            raise ValueError(f"DataProto.batch must have one batch dimension, got {list(self.batch.batch_size)}")
        for key, value in self.non_tensor_batch.items():
            if not isinstance(value, np.ndarray):
                raise ValueError(f"non_tensor_batch[{key!r}] must be a numpy array, got {type(value).__name__}")
            if n is None:
                n = len(value)
            elif len(value) != n:
                raise ValueError(f"non_tensor_batch[{key!r}] has {len(value)} rows, but the batch has {n}")

    # ---- size and indexing --------------------------------------------------------------
    def __len__(self) -> int:
        if self.batch is not None:
            return int(self.batch.batch_size[0])
        for value in self.non_tensor_batch.values():
            return len(value)
        return 0

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            return DataProtoItem(
                batch=None if self.batch is None else self.batch[int(index)],
                non_tensor_batch={k: v[index] for k, v in self.non_tensor_batch.items()},
                meta_info=self.meta_info,
            )
        if isinstance(index, list):
            index = np.asarray(index, dtype=np.int64)
        if isinstance(index, np.ndarray) and index.dtype == bool:
            index = np.nonzero(index)[0]
        if isinstance(index, torch.Tensor) and index.dtype == torch.bool:
            index = index.nonzero().flatten()
        batch_index = torch.as_tensor(index) if isinstance(index, np.ndarray) else index
        return DataProto(
            batch=None if self.batch is None else self.batch[batch_index],
            non_tensor_batch={k: _index_rows(v, index) for k, v in self.non_tensor_batch.items()},
            meta_info=self.meta_info,
        )

    def reorder(self, indices: torch.Tensor) -> None:
        """Permute rows in place."""
        reordered = self[indices]
        self.batch, self.non_tensor_batch = reordered.batch, reordered.non_tensor_batch

    # ---- key operations -----------------------------------------------------------------
    def _check_keys(self, batch_keys, non_tensor_keys, meta_keys) -> None:
        have = set(self.batch.keys()) if self.batch is not None else set()
        for key in batch_keys or []:
            if key not in have:
                raise KeyError(f"batch key {key!r} not in DataProto (has {sorted(have)})")
        for key in non_tensor_keys or []:
            if key not in self.non_tensor_batch:
                raise KeyError(f"non_tensor_batch key {key!r} not in DataProto (has {sorted(self.non_tensor_batch)})")
        for key in meta_keys or []:
            if key not in self.meta_info:
                raise KeyError(f"meta_info key {key!r} not in DataProto (has {sorted(self.meta_info)})")

    def select(self, batch_keys=None, non_tensor_batch_keys=None, meta_info_keys=None, deepcopy=False) -> "DataProto":
        self._check_keys(batch_keys, non_tensor_batch_keys, meta_info_keys)
        batch = self.batch
        if batch is not None and batch_keys is not None:
            batch = batch.select(*batch_keys)
        non = self.non_tensor_batch if non_tensor_batch_keys is None else {
            k: self.non_tensor_batch[k] for k in non_tensor_batch_keys}
        meta = self.meta_info if meta_info_keys is None else {k: self.meta_info[k] for k in meta_info_keys}
        if deepcopy:
            return DataProto(None if batch is None else batch.clone(), copy.deepcopy(non), copy.deepcopy(meta))
        return DataProto(None if batch is None else batch.clone(False), dict(non), dict(meta))

    def pop(self, batch_keys=None, non_tensor_batch_keys=None, meta_info_keys=None) -> "DataProto":
        self._check_keys(batch_keys, non_tensor_batch_keys, meta_info_keys)
        tensors = {k: self.batch.pop(k) for k in batch_keys or []}
        non = {k: self.non_tensor_batch.pop(k) for k in non_tensor_batch_keys or []}
        meta = {k: self.meta_info.pop(k) for k in meta_info_keys or []}
        return DataProto.from_dict(tensors, non, meta)

    def rename(self, old_keys, new_keys) -> "DataProto":
        old_keys = [old_keys] if isinstance(old_keys, str) else list(old_keys)
        new_keys = [new_keys] if isinstance(new_keys, str) else list(new_keys)
        if len(old_keys) != len(new_keys):
            raise ValueError(f"rename: {len(old_keys)} old keys but {len(new_keys)} new keys")
        self._check_keys(old_keys, None, None)
        for old, new in zip(old_keys, new_keys):
            self.batch.rename_key_(old, new)
        return self

    def union(self, other: "DataProto") -> "DataProto":
        """Merge `other`'s keys into self (in place, returned). Shared keys must hold equal values."""
        if len(self) and len(other) and len(self) != len(other):
            raise ValueError(f"union: batch sizes differ ({len(self)} vs {len(other)})")
        if other.batch is not None:
            if self.batch is None:
                self.batch = other.batch
            else:
                for key in other.batch.keys():
                    value = other.batch[key]
                    if key in self.batch.keys() and not torch.equal(self.batch[key], value):
                        raise ValueError(f"union: batch key {key!r} exists in both with different values")
                    self.batch[key] = value
        for key, value in other.non_tensor_batch.items():
            if key in self.non_tensor_batch and not np.array_equal(self.non_tensor_batch[key], value):
                raise ValueError(f"union: non_tensor_batch key {key!r} exists in both with different values")
            self.non_tensor_batch[key] = value
        for key, value in other.meta_info.items():
            if key in self.meta_info and self.meta_info[key] != value:
                raise ValueError(f"union: meta_info key {key!r} differs ({self.meta_info[key]!r} vs {value!r})")
            self.meta_info[key] = value
        self.check_consistency()
        return self

    # ---- splitting and joining ----------------------------------------------------------
    def split(self, split_size: int) -> list["DataProto"]:
        if split_size <= 0:
            raise ValueError(f"split: split_size must be positive, got {split_size}")
        return [self[i : i + split_size] for i in range(0, len(self), split_size)]

    def chunk(self, chunks: int) -> list["DataProto"]:
        if chunks <= 0 or len(self) % chunks != 0:
            raise ValueError(f"chunk: batch of {len(self)} rows does not split into {chunks} equal chunks; pad first")
        return self.split(len(self) // chunks)

    @staticmethod
    def concat(data: list["DataProto"]) -> "DataProto":
        if not data:
            raise ValueError("concat: empty list")
        first = data[0]
        batch_keys = set(first.batch.keys()) if first.batch is not None else set()
        for i, d in enumerate(data[1:], start=1):
            keys = set(d.batch.keys()) if d.batch is not None else set()
            if keys != batch_keys:
                raise ValueError(f"concat: part {i} batch keys differ, missing {sorted(batch_keys ^ keys)}")
            if set(d.non_tensor_batch) != set(first.non_tensor_batch):
                diff = sorted(set(d.non_tensor_batch) ^ set(first.non_tensor_batch))
                raise ValueError(f"concat: part {i} non_tensor_batch keys differ: {diff}")
        batch = None if first.batch is None else torch.cat([d.batch for d in data], dim=0)
        non = {k: np.concatenate([d.non_tensor_batch[k] for d in data]) for k in first.non_tensor_batch}
        meta = {}
        for d in data:
            for k, v in d.meta_info.items():
                meta.setdefault(k, v)
        return DataProto(batch=batch, non_tensor_batch=non, meta_info=meta)

    def repeat(self, repeat_times: int = 2, interleave: bool = True) -> "DataProto":
        """interleave: [a, a, b, b]; tiled: [a, b, a, b]."""
        n = len(self)
        index = (torch.arange(n).repeat_interleave(repeat_times) if interleave
                 else torch.arange(n).repeat(repeat_times))
        return self[index]

    # ---- device, disk, pickling ---------------------------------------------------------
    def to(self, device) -> "DataProto":
        if self.batch is not None:
            self.batch = self.batch.to(device)
        return self

    def _to_state(self) -> dict:
        tensors = None if self.batch is None else {k: v.contiguous() for k, v in self.batch.items()}
        size = None if self.batch is None else list(self.batch.batch_size)
        return {"tensors": tensors, "batch_size": size, "non_tensor_batch": self.non_tensor_batch,
                "meta_info": self.meta_info}

    def _from_state(self, state: dict) -> None:
        tensors = state["tensors"]
        self.batch = None if tensors is None else TensorDict(tensors, batch_size=state["batch_size"])
        self.non_tensor_batch = state["non_tensor_batch"]
        self.meta_info = state["meta_info"]

    def __getstate__(self) -> dict:
        return self._to_state()

    def __setstate__(self, state: dict) -> None:
        self._from_state(state)

    def save_to_disk(self, path) -> None:
        torch.save(self._to_state(), path)

    @staticmethod
    def load_from_disk(path) -> "DataProto":
        out = DataProto.__new__(DataProto)
        out._from_state(torch.load(path, weights_only=False))
        return out


def pad_dataproto_to_divisor(data: DataProto, size_divisor: int) -> tuple[DataProto, int]:
    """Pad by repeating rows from the start until len % size_divisor == 0; returns (padded, pad_size)."""
    if size_divisor <= 0:
        raise ValueError(f"size_divisor must be positive, got {size_divisor}")
    pad_size = (-len(data)) % size_divisor
    if pad_size == 0:
        return data, 0
    index = torch.arange(pad_size) % len(data)
    return DataProto.concat([data, data[index]]), pad_size


def unpad_dataproto(data: DataProto, pad_size: int) -> DataProto:
    return data[: len(data) - pad_size] if pad_size else data


class DataProtoFuture:
    """Results of a non-blocking call: `get()` waits, collects (e.g. concat) and selects."""

    def __init__(self, collect_fn: Callable, futures: list, dispatch_fn: Optional[Callable] = None):
        self.collect_fn, self.futures, self.dispatch_fn = collect_fn, futures, dispatch_fn

    @staticmethod
    def concat(futures: list) -> "DataProtoFuture":
        return DataProtoFuture(collect_fn=DataProto.concat, futures=futures)

    def get(self, timeout: Optional[float] = None) -> Any:
        import ray

        output = self.collect_fn(ray.get(self.futures, timeout=timeout))
        return self.dispatch_fn(output) if self.dispatch_fn is not None else output

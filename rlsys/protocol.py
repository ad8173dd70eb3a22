"""DataProto: the batch that moves between the driver and the workers.

A `DataProto` is three things sharing one batch dimension N:
  batch            tensordict.TensorDict, batch_size [N]    (token ids, masks, log-probs, ...)
  non_tensor_batch dict[str, np.ndarray], first dim N       (uids, ground truths, texts, ...)
  meta_info        dict                                     (flags and settings for the call)
Operations keep rows aligned across the first two; `meta_info` rides along. Names follow verl's
`verl.protocol`, so verl code ports by changing the import. Pickling (so Ray) sends each tensor as one
compact buffer: a view is cut down to its rows, so one chunk of a batch never ships the whole storage.

    data = DataProto.from_dict({"input_ids": ids}, {"uid": uids}, {"temperature": 1.0})
    padded, pad_size = pad_dataproto_to_divisor(data, world_size)
    parts = padded.chunk(world_size)        # one per rank
    out = unpad_dataproto(DataProto.concat(parts), pad_size)
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch
from tensordict import TensorDict

__all__ = ["DataProto", "DataProtoItem", "DataProtoFuture", "pad_dataproto_to_divisor", "unpad_dataproto"]


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
            raise ValueError(f"bool mask has shape {index.shape}, but the DataProto has {num_rows} rows")
        return np.nonzero(index)[0]
    if index.size == 0:
        return np.zeros(0, dtype=np.int64)
    if not np.issubdtype(index.dtype, np.integer) or index.ndim != 1:
        raise ValueError(f"row index must be a 1-D int or bool sequence, got dtype {index.dtype}, shape {index.shape}")
    return index.astype(np.int64)


def _is_int(index) -> bool:
    if isinstance(index, torch.Tensor):
        return index.ndim == 0 and not index.is_floating_point() and index.dtype != torch.bool
    return isinstance(index, (int, np.integer)) and not isinstance(index, (bool, np.bool_))


@dataclass
class DataProtoItem:
    """One row of a DataProto: `batch` is a TensorDict with batch_size [], values are scalars/rows."""

    batch: Optional[TensorDict] = None
    non_tensor_batch: dict = field(default_factory=dict)
    meta_info: dict = field(default_factory=dict)


@dataclass(eq=False)  # `==` on TensorDicts is elementwise; compare fields explicitly instead
class DataProto:
    """A batch of N rows: tensors in `batch`, numpy arrays in `non_tensor_batch`, plus `meta_info`."""

    batch: Optional[TensorDict] = None
    non_tensor_batch: dict = field(default_factory=dict)
    meta_info: dict = field(default_factory=dict)

    def __post_init__(self):  # lists become object arrays; then validate
        self.non_tensor_batch = {k: _as_object_array(v) if isinstance(v, (list, tuple)) else v
                                 for k, v in (self.non_tensor_batch or {}).items()}
        self.meta_info = {} if self.meta_info is None else self.meta_info
        self.check_consistency()

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_dict(cls, tensors: Optional[dict] = None, non_tensors: Optional[dict] = None,
                  meta_info: Optional[dict] = None) -> "DataProto":
        """Build from {key: tensor with dim 0 = N}, {key: array or list of N}, meta_info."""
        tensors, non_tensors = tensors or {}, non_tensors or {}
        first_key, size = None, None
        for key, value in tensors.items():
            if not isinstance(value, torch.Tensor) or value.ndim == 0:
                raise ValueError(f"from_dict: tensors[{key!r}] must be a tensor with a batch dim, got {value!r:.60}")
            if size is None:
                first_key, size = key, value.shape[0]
            elif value.shape[0] != size:
                raise ValueError(f"from_dict: tensor {key!r} has batch size {value.shape[0]}, "
                                 f"expected {size} (from {first_key!r})")
        batch = TensorDict(dict(tensors), batch_size=[size]) if tensors else None
        return cls(batch=batch, non_tensor_batch=dict(non_tensors), meta_info=dict(meta_info or {}))

    @classmethod
    def from_single_dict(cls, data: dict, meta_info: Optional[dict] = None) -> "DataProto":
        """Tensors go to `batch`; numpy arrays and lists go to `non_tensor_batch`."""
        tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
        return cls.from_dict(tensors, {k: v for k, v in data.items() if k not in tensors}, meta_info)

    def check_consistency(self) -> None:
        """Raise ValueError unless `batch` has one batch dim and every array has the same N rows."""
        if self.batch is not None and (not isinstance(self.batch, TensorDict) or len(self.batch.batch_size) != 1):
            raise ValueError(f"DataProto.batch must be a TensorDict with one batch dim, got {self.batch!r:.100}")
        num_rows, source = (self.batch.batch_size[0], "the batch") if self.batch is not None else (None, None)
        for key, value in self.non_tensor_batch.items():
            if not isinstance(value, np.ndarray) or value.ndim == 0:
                raise ValueError(f"non_tensor_batch[{key!r}] must be a numpy array with a batch dim, "
                                 f"got {type(value).__name__}")
            if num_rows is None:
                num_rows, source = len(value), f"non_tensor_batch[{key!r}]"
            elif len(value) != num_rows:
                raise ValueError(f"non_tensor_batch[{key!r}] has {len(value)} rows, but {source} has {num_rows}")

    # ---- size and indexing --------------------------------------------------------------
    def __len__(self) -> int:
        if self.batch is not None:
            return int(self.batch.batch_size[0])
        for value in self.non_tensor_batch.values():
            return len(value)
        return 0

    def __getitem__(self, index):
        """int -> DataProtoItem; slice, int list/array/tensor or bool mask -> DataProto."""
        if _is_int(index):
            i = int(index)
            if not -len(self) <= i < len(self):
                raise IndexError(f"row {i} out of range for a DataProto of {len(self)} rows")
            return DataProtoItem(batch=None if self.batch is None else self.batch[i],
                                 non_tensor_batch={k: v[i] for k, v in self.non_tensor_batch.items()},
                                 meta_info=self.meta_info)
        if isinstance(index, slice):
            rows, batch_rows = index, index
        else:
            rows = _normalize_rows(index, len(self))
            batch_rows = torch.from_numpy(rows)
        return DataProto(batch=None if self.batch is None else self.batch[batch_rows],
                         non_tensor_batch={k: v[rows] for k, v in self.non_tensor_batch.items()},
                         meta_info=dict(self.meta_info))

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def reorder(self, indices) -> None:
        """Permute rows in place: row i becomes old row indices[i]."""
        reordered = self[indices]
        self.batch, self.non_tensor_batch = reordered.batch, reordered.non_tensor_batch

    # ---- key operations -----------------------------------------------------------------
    def _check_keys(self, batch_keys, non_tensor_keys, meta_keys) -> None:
        top = list(self.batch.keys()) if self.batch is not None else []
        for name, keys, have in (("batch", batch_keys, _leaf_keys(self.batch) + top),
                                 ("non_tensor_batch", non_tensor_keys, list(self.non_tensor_batch)),
                                 ("meta_info", meta_keys, list(self.meta_info))):
            for key in keys or []:
                if key not in have:
                    raise KeyError(f"{name} key {key!r} not in DataProto (has {sorted(set(have), key=str)})")

    def select(self, batch_keys=None, non_tensor_batch_keys=None, meta_info_keys=None,
               deepcopy: bool = False) -> "DataProto":
        """A new DataProto with only the named keys (None = all). Shares tensors unless `deepcopy`."""
        self._check_keys(batch_keys, non_tensor_batch_keys, meta_info_keys)
        batch = self.batch
        if batch is not None:
            batch = batch.select(*batch_keys) if batch_keys is not None else batch.clone(False)
        non = dict(self.non_tensor_batch) if non_tensor_batch_keys is None else {
            k: self.non_tensor_batch[k] for k in non_tensor_batch_keys}
        meta = dict(self.meta_info) if meta_info_keys is None else {k: self.meta_info[k] for k in meta_info_keys}
        if deepcopy:
            return DataProto(None if batch is None else batch.clone(), copy.deepcopy(non), copy.deepcopy(meta))
        return DataProto(batch, non, meta)

    def pop(self, batch_keys=None, non_tensor_batch_keys=None, meta_info_keys=None) -> "DataProto":
        """Remove the named keys from self and return them as a new DataProto."""
        self._check_keys(batch_keys, non_tensor_batch_keys, meta_info_keys)
        batch = None
        if batch_keys:
            batch = TensorDict({}, batch_size=self.batch.batch_size, device=self.batch.device)
            for key in batch_keys:
                batch.set(key, self.batch.pop(key))
        non = {k: self.non_tensor_batch.pop(k) for k in non_tensor_batch_keys or []}
        meta = {k: self.meta_info.pop(k) for k in meta_info_keys or []}
        return DataProto(batch=batch, non_tensor_batch=non, meta_info=meta)

    def rename(self, old_keys, new_keys) -> "DataProto":
        """Rename batch or non_tensor_batch keys in place; returns self."""
        old_keys = [old_keys] if isinstance(old_keys, str) else list(old_keys)
        new_keys = [new_keys] if isinstance(new_keys, str) else list(new_keys)
        if len(old_keys) != len(new_keys):
            raise ValueError(f"rename: {len(old_keys)} old keys but {len(new_keys)} new keys")
        batch_keys = _leaf_keys(self.batch)
        for old, new in zip(old_keys, new_keys):
            if new in batch_keys or new in self.non_tensor_batch:
                raise ValueError(f"rename: cannot rename {old!r} to {new!r}, {new!r} already exists")
            if old in batch_keys:
                self.batch.rename_key_(old, new)
                batch_keys = _leaf_keys(self.batch)
            elif old in self.non_tensor_batch:
                self.non_tensor_batch[new] = self.non_tensor_batch.pop(old)
            else:
                raise KeyError(f"rename: key {old!r} not in DataProto (batch has {batch_keys}, "
                               f"non_tensor_batch has {sorted(self.non_tensor_batch)})")
        return self

    def union(self, other: "DataProto") -> "DataProto":
        """Merge `other`'s keys into self (in place; returns self). Shared keys must hold equal values."""
        has_rows = [d.batch is not None or bool(d.non_tensor_batch) for d in (self, other)]
        if all(has_rows) and len(self) != len(other):  # an empty DataProto() unions with any size
            raise ValueError(f"union: batch sizes differ ({len(self)} vs {len(other)})")
        if other.batch is not None and self.batch is None:
            self.batch = other.batch.clone(False)  # shallow: new keys added later do not reach `other`
        elif other.batch is not None:
            have = set(_leaf_keys(self.batch))
            for key in _leaf_keys(other.batch):
                value = other.batch[key]
                if key in have and not _values_equal(self.batch[key], value):
                    raise ValueError(f"union: batch key {key!r} exists in both with different values")
                self.batch.set(key, value)
        for key, value in other.non_tensor_batch.items():
            if key in self.non_tensor_batch and not _values_equal(self.non_tensor_batch[key], value):
                raise ValueError(f"union: non_tensor_batch key {key!r} exists in both with different values")
            self.non_tensor_batch[key] = value
        for key, value in other.meta_info.items():
            if key in self.meta_info and not _values_equal(self.meta_info[key], value):
                raise ValueError(f"union: meta_info key {key!r} differs ({self.meta_info[key]!r} vs {value!r})")
            self.meta_info[key] = value
        self.check_consistency()
        return self

    # ---- splitting and joining ----------------------------------------------------------
    def split(self, split_size: int) -> list["DataProto"]:
        """Consecutive pieces of `split_size` rows; the last may be smaller."""
        if split_size <= 0:
            raise ValueError(f"split: split_size must be positive, got {split_size}")
        return [self[i : i + split_size] for i in range(0, len(self), split_size)]

    def chunk(self, chunks: int) -> list["DataProto"]:
        """`chunks` equal consecutive pieces; len(self) must divide (pad first)."""
        if chunks <= 0 or len(self) % chunks != 0:
            raise ValueError(f"chunk: batch of {len(self)} rows does not split into {chunks} equal chunks; "
                             "pad it with pad_dataproto_to_divisor first")
        size = len(self) // chunks
        return [self[i * size : (i + 1) * size] for i in range(chunks)]

    @staticmethod
    def concat(data: list["DataProto"]) -> "DataProto":
        """Rows of all parts in order. Keys must match; meta_info is the first's, plus consistent extras."""
        if not data:
            raise ValueError("concat: empty list")
        first = data[0]
        batch_keys, non_keys = set(_leaf_keys(first.batch)), set(first.non_tensor_batch)
        for i, part in enumerate(data[1:], start=1):
            for name, want, got in (("batch", batch_keys, set(_leaf_keys(part.batch))),
                                    ("non_tensor_batch", non_keys, set(part.non_tensor_batch))):
                for where, missing in ((f"part {i}", want - got), ("part 0", got - want)):
                    if missing:
                        raise ValueError(f"concat: {where} is missing {name} key {sorted(missing, key=str)[0]!r}")
        batch = None
        if any(part.batch is not None for part in data):
            batch = torch.cat([part.batch if part.batch is not None else TensorDict({}, batch_size=[len(part)])
                               for part in data], dim=0)
        non = {k: np.concatenate([part.non_tensor_batch[k] for part in data]) for k in first.non_tensor_batch}
        meta = dict(first.meta_info)
        for part in data[1:]:
            for key, value in part.meta_info.items():
                meta.setdefault(key, value)
        return DataProto(batch=batch, non_tensor_batch=non, meta_info=meta)

    def repeat(self, repeat_times: int = 2, interleave: bool = True) -> "DataProto":
        """Each row `repeat_times` times: interleave -> [a, a, b, b]; tiled -> [a, b, a, b]."""
        if repeat_times < 1:
            raise ValueError(f"repeat: repeat_times must be >= 1, got {repeat_times}")
        rows = torch.arange(len(self))
        return self[rows.repeat_interleave(repeat_times) if interleave else rows.repeat(repeat_times)]

    # ---- device, disk, pickling ---------------------------------------------------------
    def to(self, device) -> "DataProto":
        """Move `batch` to `device` (in place; returns self)."""
        if self.batch is not None:
            self.batch = self.batch.to(device)
        return self

    def __getstate__(self) -> dict:
        """Plain dict of compact tensors (nested keys as tuples), numpy arrays and meta_info."""
        batch = self.batch
        return {
            "tensors": None if batch is None else {k: _compact(batch[k]) for k in _leaf_keys(batch)},
            "batch_size": None if batch is None else list(batch.batch_size),
            "device": None if batch is None or batch.device is None else str(batch.device),
            "non_tensor_batch": self.non_tensor_batch,
            "meta_info": self.meta_info,
        }

    def __setstate__(self, state: dict) -> None:
        batch = None
        if state["tensors"] is not None:
            batch = TensorDict({}, batch_size=state["batch_size"], device=state["device"])
            for key, value in state["tensors"].items():
                batch.set(key, value)
        self.batch, self.non_tensor_batch, self.meta_info = batch, state["non_tensor_batch"], state["meta_info"]
        self.check_consistency()

    def save_to_disk(self, path) -> None:
        torch.save(self.__getstate__(), path)

    @staticmethod
    def load_from_disk(path) -> "DataProto":
        out = DataProto.__new__(DataProto)
        out.__setstate__(torch.load(path, weights_only=False))  # our own files: they hold numpy objects
        return out


def pad_dataproto_to_divisor(data: DataProto, size_divisor: int) -> tuple[DataProto, int]:
    """Append rows 0, 1, ... (cycling) until len % size_divisor == 0; returns (padded, pad_size)."""
    if size_divisor <= 0:
        raise ValueError(f"pad_dataproto_to_divisor: size_divisor must be positive, got {size_divisor}")
    pad_size = (-len(data)) % size_divisor
    if pad_size == 0:
        return data, 0
    if len(data) == 0:
        raise ValueError("pad_dataproto_to_divisor: cannot pad an empty DataProto")
    return DataProto.concat([data, data[torch.arange(pad_size) % len(data)]]), pad_size


def unpad_dataproto(data: DataProto, pad_size: int) -> DataProto:
    """Drop the last `pad_size` rows added by pad_dataproto_to_divisor."""
    if pad_size < 0 or pad_size > len(data):
        raise ValueError(f"unpad_dataproto: pad_size {pad_size} out of range for {len(data)} rows")
    return data[: len(data) - pad_size] if pad_size else data


@dataclass
class DataProtoFuture:
    """Results of a non-blocking call: `get()` waits on `futures`, collects them, then selects.

    collect_fn(list of results) -> DataProto (e.g. DataProto.concat); dispatch_fn(DataProto) -> the part
    this future stands for (e.g. one chunk), or None for all of it. Ray is imported only in `get`.
    """

    collect_fn: Callable
    futures: list
    dispatch_fn: Optional[Callable] = None

    @classmethod
    def concat(cls, futures: list) -> "DataProtoFuture":
        """A future for the concatenation of the DataProtos that `futures` (Ray ObjectRefs) resolve to."""
        return cls(collect_fn=DataProto.concat, futures=list(futures))

    def chunk(self, chunks: int) -> list["DataProtoFuture"]:
        """`chunks` futures; the i-th resolves to chunk i of this future's DataProto."""
        pick = functools.partial(_pick_chunk, self.dispatch_fn, chunks)
        return [DataProtoFuture(self.collect_fn, self.futures, functools.partial(pick, i)) for i in range(chunks)]

    def get(self, timeout: Optional[float] = None) -> Any:
        import ray

        output = self.collect_fn(ray.get(self.futures, timeout=timeout))
        return self.dispatch_fn(output) if self.dispatch_fn is not None else output


def _pick_chunk(dispatch_fn: Optional[Callable], chunks: int, index: int, data: DataProto) -> DataProto:
    return (data if dispatch_fn is None else dispatch_fn(data)).chunk(chunks)[index]

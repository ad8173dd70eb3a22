"""Worker-side checkpoint I/O for roles that train (actor, critic): every rank calls these.

Model + optimizer go through torch.distributed.checkpoint (each FSDP2 rank writes its shard),
the lr scheduler and small extras from rank 0, and the actor's full weights as a HF directory.
The driver side (layout, atomic rename, resume) is `rlsys.trainer.checkpoint`.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import torch


@contextlib.contextmanager
def _quiet_single_process():
    """DCP warns that it 'assumes a single process' whenever no process group exists; that is our intent."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def save_train_state(path: Path, model, optimizer, lr_scheduler, extra: dict, rank: int) -> None:
    """Model + optimizer through DCP (sharded under FSDP2, each rank writes its shard), and the
    scheduler state and `extra` (picklable scalars) from rank 0."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    path.mkdir(parents=True, exist_ok=True)
    model_sd, optim_sd = get_state_dict(model, optimizer)
    with _quiet_single_process():
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(path / "dcp"))
    if rank == 0:
        torch.save({"lr_scheduler": lr_scheduler.state_dict(), **extra}, path / "extra_state.pt")


def load_train_state(path: Path, model, optimizer, lr_scheduler) -> dict:
    """Inverse of `save_train_state`; returns its `extra` dict. DCP reshards if the world size changed."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optim": optim_sd}
    with _quiet_single_process():
        dcp.load(state, checkpoint_id=str(path / "dcp"))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    extra = torch.load(path / "extra_state.pt", weights_only=True)
    lr_scheduler.load_state_dict(extra.pop("lr_scheduler"))
    return extra


def save_hf_model(path: Path, model, model_path: str, rank: int) -> None:
    """Full (gathered) weights as a HF directory with the run's tokenizer; rank 0 writes.
    Every rank must call: gathering FSDP2 shards is collective."""
    from transformers import AutoTokenizer

    from rlsys.workers.model_utils import full_state_dict

    full = {name: tensor.cpu() for name, tensor in full_state_dict(model)}
    if rank != 0:
        return
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, state_dict=full)
    AutoTokenizer.from_pretrained(model_path).save_pretrained(path)

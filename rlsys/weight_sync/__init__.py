"""Weight sync from the trainer to vLLM rollout workers.

One interface, four transports. The sender (`WeightSender` subclasses) runs in the
trainer: it flattens HF-named tensors into buckets and moves them; the receiver runs inside
every vLLM worker as `WeightSyncExtension` (pass `worker_extension_cls=EXTENSION_CLS`) and
loads them with vLLM's layerwise reload. Pick the transport with `make_sender`:

    colocate + CPU: "shm"        split + CPU: "gloo"
    colocate + GPU: "cuda_ipc"   split + GPU: "nccl"

See docs/weight_sync.md for the vLLM APIs behind each path.
"""

from rlsys.weight_sync.buckets import BucketPlan, TensorMeta, plan_buckets
from rlsys.weight_sync.sender import SyncReport, WeightSender, named_parameters_for_sync
from rlsys.weight_sync.verify import WeightSyncMismatch, fingerprint

EXTENSION_CLS = "rlsys.weight_sync.vllm_extension.WeightSyncExtension"
TRANSPORTS = ("shm", "gloo", "nccl", "cuda_ipc")


def make_sender(transport: str, bucket_size_mb: float = 256, verify: bool = False,
                timeout_s: float = 120.0, host: str = "127.0.0.1", load_mode: str = "auto") -> WeightSender:
    """Sender for `transport` (one of TRANSPORTS); imports only what that transport needs.

    `load_mode` (auto | layerwise | direct) tells the receivers how to load, see
    `rlsys.weight_sync.receiver.needs_layerwise_reload`.
    """
    sender = _make_sender(transport, bucket_size_mb, verify, timeout_s, host)
    sender.load_mode = load_mode
    return sender


def _make_sender(transport: str, bucket_size_mb: float, verify: bool, timeout_s: float,
                 host: str) -> WeightSender:
    if transport == "shm":
        from rlsys.weight_sync.shm import ShmWeightSender

        return ShmWeightSender(bucket_size_mb, verify)
    if transport == "gloo":
        from rlsys.weight_sync.gloo import GlooWeightSender

        return GlooWeightSender(bucket_size_mb, verify, host=host, timeout_s=timeout_s)
    if transport == "nccl":
        from rlsys.weight_sync.nccl import NcclWeightSender

        return NcclWeightSender(bucket_size_mb, verify, host=host, timeout_s=timeout_s)
    if transport == "cuda_ipc":
        from rlsys.weight_sync.cuda_ipc import CudaIpcWeightSender

        return CudaIpcWeightSender(bucket_size_mb, verify)
    raise ValueError(f"weight_sync transport {transport!r} unknown; choose one of {TRANSPORTS}")


def transport_for(placement: str, device_type: str) -> str:
    """The transport for a placement ("colocate" | "split") on "cpu" or "cuda"."""
    table = {("colocate", "cpu"): "shm", ("split", "cpu"): "gloo",
             ("colocate", "cuda"): "cuda_ipc", ("split", "cuda"): "nccl"}
    if (placement, device_type) not in table:
        raise ValueError(f"no weight-sync transport for placement={placement!r}, device={device_type!r}")
    return table[(placement, device_type)]


__all__ = ["BucketPlan", "TensorMeta", "plan_buckets", "SyncReport", "WeightSender",
           "named_parameters_for_sync", "WeightSyncMismatch", "fingerprint", "EXTENSION_CLS",
           "TRANSPORTS", "make_sender", "transport_for"]

"""The `worker_extension_cls` that vLLM mixes into each of its worker processes.

Pass `worker_extension_cls="rlsys.weight_sync.vllm_extension.WeightSyncExtension"` to
`vllm.LLM`; vLLM then adds this class to its worker's bases, and the methods below become
callable with `llm.collective_rpc("rlsys_...", args=(...))`, once per worker. vLLM refuses
an extension whose attribute names collide with the worker's own (`update_weights`,
`start_weight_update`, ... exist there), hence the `rlsys_` prefix on everything.

All arguments and return values are plain Python data (dict, list, str, int, float,
bytes): vLLM's engine-core RPC serialises with msgpack and rejects other objects unless
insecure serialisation is switched on. `self` is the vLLM worker: it provides
`self.model_runner.get_model()`, `self.model_config`, `self.device`.
"""

from __future__ import annotations

import importlib
from typing import Any

from rlsys.weight_sync.receiver import load_buckets, needs_layerwise_reload

COPY_PLANS_ATTR = "_rlsys_copy_plans"  # {reuse key: CopyPlan}, see rlsys.weight_sync.copy_plan

# transport name -> module exposing `receive_buckets(worker, payload)` (a context manager
# yielding an iterator of (BucketPlan, uint8 buffer)) and optionally `init_receiver(...)`.
_TRANSPORT_MODULES = {
    "shm": "rlsys.weight_sync.shm",
    "gloo": "rlsys.weight_sync.gloo",
    "nccl": "rlsys.weight_sync.nccl",
    "cuda_ipc": "rlsys.weight_sync.cuda_ipc",
}


def drop_kept_state(receiver) -> None:
    """Forget what a receiver keeps between syncs: shared-memory mappings, opened CUDA IPC
    storages, copy plans (each frees the sender's memory it pins)."""
    from rlsys.weight_sync.cuda_ipc import EXPORTS_ATTR
    from rlsys.weight_sync.shm import MAPPINGS_ATTR

    for attr in (MAPPINGS_ATTR, EXPORTS_ATTR, COPY_PLANS_ATTR):
        receiver.__dict__.pop(attr, None)


def transport_module(name: str):
    if name not in _TRANSPORT_MODULES:
        raise ValueError(f"unknown weight-sync transport {name!r}; known: {sorted(_TRANSPORT_MODULES)}")
    return importlib.import_module(_TRANSPORT_MODULES[name])


class WeightSyncExtension:
    """Receiver-side weight sync methods, run inside every vLLM worker."""

    def rlsys_worker_info(self) -> dict:
        """Rank in vLLM's world group, device, and (on CUDA) the device UUID."""
        from vllm.distributed.parallel_state import get_world_group

        info: dict[str, Any] = {"rank": get_world_group().rank, "device": str(self.device)}
        if self.device.type == "cuda":
            from vllm.platforms import current_platform

            info["device_uuid"] = current_platform.get_device_uuid(self.device.index)
        return info

    def rlsys_init_group(self, transport: str, init_info: dict) -> dict:
        """Join the sender's group for a broadcast transport (gloo | nccl)."""
        from vllm.distributed.parallel_state import get_world_group

        module = transport_module(transport)
        rank = get_world_group().rank + int(init_info["rank_offset"])
        groups = self.__dict__.setdefault("_rlsys_groups", {})
        if transport in groups:
            groups.pop(transport).close()
        groups[transport] = module.init_receiver(rank=rank, device=self.device, **init_info)
        return {"rank": rank}

    def rlsys_close_groups(self) -> None:
        """Leave every group made by `rlsys_init_group`; drop kept shared-memory mappings,
        opened CUDA IPC storages and copy plans."""
        for group in self.__dict__.pop("_rlsys_groups", {}).values():
            group.close()
        drop_kept_state(self)

    def rlsys_receive(self, payload: dict) -> dict:
        """Receive one full sync (all buckets), verify, load; returns the report dict."""
        module = transport_module(payload["transport"])
        group = self.__dict__.get("_rlsys_groups", {}).get(payload["transport"])
        model = self.model_runner.get_model()
        with module.receive_buckets(self, payload, group) as buckets:
            report = load_buckets(
                model,
                self.model_config,
                buckets,
                payload.get("fingerprints"),
                payload.get("corrupt_param_for_test"),
                layerwise=needs_layerwise_reload(self.device, self.model_config, payload.get("load_mode", "auto")),
                copy_plans=self.__dict__.setdefault(COPY_PLANS_ATTR, {}),
            )
        report["rank"] = self.rlsys_worker_info()["rank"]
        return report

    def rlsys_param_fingerprints(self, names: list[str] | None = None) -> dict:
        """Fingerprints of the model's current parameters (vLLM names); for tests/debugging."""
        from rlsys.weight_sync.verify import fingerprint

        model = self.model_runner.get_model()
        return {
            n: list(fingerprint(p.data))
            for n, p in model.named_parameters()
            if (names is None or n in names) and p.numel() > 0
        }

"""Weight-sync receiver for the transformers engine (`rollout.name=hf`).

Answers the same calls as the vLLM worker extension (`rlsys_worker_info`, `rlsys_init_group`,
`rlsys_receive`, `rlsys_close_groups`) with the same transports and checks, but loads the
received tensors straight into the HF model by parameter name: no repacking, no fusion.
"""

from __future__ import annotations

import torch

from rlsys.weight_sync.buckets import BucketPlan, tensor_views
from rlsys.weight_sync.verify import corrupt_for_test, first_mismatch
from rlsys.weight_sync.vllm_extension import drop_kept_state, transport_module


class HFWeightReceiver:
    """One receiver (rank 0 of its engine) in front of an in-process HF model."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.device = next(model.parameters()).device
        self.groups: dict = {}

    def call(self, method: str, *args) -> list:
        return [getattr(self, method)(*args)]

    def rlsys_worker_info(self) -> dict:
        return {"rank": 0, "device": str(self.device)}

    def rlsys_init_group(self, transport: str, init_info: dict) -> dict:
        module = transport_module(transport)
        rank = int(init_info["rank_offset"])
        if transport in self.groups:
            self.groups.pop(transport).close()
        self.groups[transport] = module.init_receiver(rank=rank, device=self.device, **init_info)
        return {"rank": rank}

    def rlsys_close_groups(self) -> None:
        for group in self.groups.values():
            group.close()
        self.groups = {}
        drop_kept_state(self)

    @torch.no_grad()
    def rlsys_receive(self, payload: dict) -> dict:
        module = transport_module(payload["transport"])
        state = self.model.state_dict()
        received: list[tuple[str, torch.Tensor]] = []
        with module.receive_buckets(self, payload, self.groups.get(payload["transport"])) as buckets:
            for plan, buffer, *_ in buckets:
                assert isinstance(plan, BucketPlan)
                received += [(n, t.clone()) for n, t in tensor_views(buffer, plan)]
        corrupt = payload.get("corrupt_param_for_test")
        for name, tensor in received:
            if name == corrupt:
                corrupt_for_test(tensor)
        if payload.get("fingerprints"):
            bad = first_mismatch(payload["fingerprints"], received)
            if bad is not None:
                return {"rank": 0, "mismatch": bad, "mismatch_stage": "received"}
        unknown = [n for n, _ in received if n not in state]
        if unknown:
            raise KeyError(f"HF rollout model has no parameters named {unknown[:5]}")
        for name, tensor in received:
            state[name].copy_(tensor.to(state[name].device))
        missing = sorted(set(n for n, p in self.model.named_parameters()) - {n for n, _ in received})
        return {"rank": 0, "loaded": len(received), "not_loaded": missing}

"""Driver side of weight sync: pick the transport from placement and device, connect once,
then one `sync()` per step. The actor's rank 0 drives the transfer; the rollout engines
receive through their vLLM worker extension (see rlsys/weight_sync)."""

from __future__ import annotations

from rlsys.weight_sync import transport_for


class WeightSyncDriver:
    def __init__(self, config, roles, device_type: str):
        self.roles = roles
        self.transport = transport_for(config.placement, device_type)
        roles.actor.connect_rollout(roles.rollout.workers, self.transport, config.weight_sync)

    def sync(self, corrupt_param_for_test: str | None = None) -> dict:
        reports = self.roles.actor.sync_weights(corrupt_param_for_test)
        return reports[0]

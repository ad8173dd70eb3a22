"""RayResourcePool: one STRICT_PACK placement group per node, one bundle per worker process.

A bundle is {"CPU": c, "GPU": 1} (no GPU key with use_gpu=False). `max_colocate_count`
lets that many worker groups share each bundle: every actor then asks for 1/max_colocate_count
of the bundle's GPU and CPU.
"""

from __future__ import annotations

from typing import Optional


class RayResourcePool:
    def __init__(self, process_on_nodes: list[int], use_gpu: bool = True, max_colocate_count: int = 1,
                 name_prefix: Optional[str] = None, num_cpus_per_worker: float = 1, pg_timeout_s: float = 120.0):
        if not process_on_nodes or any(n <= 0 for n in process_on_nodes):
            raise ValueError(f"process_on_nodes={process_on_nodes}: every node needs at least one process")
        if max_colocate_count < 1:
            raise ValueError(f"max_colocate_count={max_colocate_count} must be >= 1")
        self.process_on_nodes = list(process_on_nodes)
        self.use_gpu = use_gpu
        self.max_colocate_count = max_colocate_count
        self.name_prefix = name_prefix or "rlsys"
        self.num_cpus_per_worker = num_cpus_per_worker
        self.pg_timeout_s = pg_timeout_s
        self._pgs = None

    @property
    def world_size(self) -> int:
        return sum(self.process_on_nodes)

    def bundle(self) -> dict:
        b = {"CPU": self.num_cpus_per_worker}
        if self.use_gpu:
            b["GPU"] = 1
        return b

    def actor_resources(self) -> dict:
        share = 1.0 / self.max_colocate_count
        return {"num_cpus": self.num_cpus_per_worker * share, "num_gpus": share if self.use_gpu else 0}

    def get_placement_groups(self) -> list:
        if self._pgs is not None:
            return self._pgs
        import ray
        from ray.util.placement_group import placement_group

        pgs = [placement_group([self.bundle()] * n, strategy="STRICT_PACK", name=f"{self.name_prefix}_pg_{i}")
               for i, n in enumerate(self.process_on_nodes)]
        ready, _ = ray.wait([pg.ready() for pg in pgs], num_returns=len(pgs), timeout=self.pg_timeout_s)
        if len(ready) != len(pgs):
            raise RuntimeError(
                f"resource pool {self.name_prefix!r}: placement groups of {self.process_on_nodes} bundles of "
                f"{self.bundle()} not ready after {self.pg_timeout_s:.0f} s; cluster has {ray.available_resources()}"
            )
        self._pgs = pgs
        return pgs

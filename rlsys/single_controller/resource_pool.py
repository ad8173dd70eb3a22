"""RayResourcePool: one STRICT_PACK placement group per node, one bundle per worker process.

    pool = RayResourcePool([4], use_gpu=False, num_cpus_per_worker=0.5)   # 4 workers on one node

A bundle is {"CPU": num_cpus_per_worker, "GPU": 1} (no GPU key with use_gpu=False).
`max_colocate_count = k` lets k worker groups share each bundle: every actor then asks for
1/k of the bundle's GPU and CPU, so k groups fit exactly. CPU shares may be fractional
(Ray accepts e.g. num_cpus=0.25), which is how 4+ workers fit on a 2-core machine.
Placement groups are created on first use and must become ready within `pg_timeout_s`.
`distinct_nodes=True` pins each placement group to a different alive node (rlsys.single_controller
.nodes.pick_nodes), so `[4, 4]` means four workers on each of two nodes, never eight on one.

The pool counts the worker groups placed on it: a group beyond `max_colocate_count` fails at
once with ResourcePoolExhaustedError (bundles asked, bundles free, who holds them) instead of
waiting for resources that never come. The default is 1, not verl's 10, on purpose: several
roles share a process through create_colocated_worker_cls (one group), and a second group on
the same GPUs is then a mistake to report, not a silent 1/10-GPU share each.
"""

from __future__ import annotations

import uuid
from typing import Optional


class ResourcePoolExhaustedError(RuntimeError):
    """A worker group asked a pool for bundles that other groups of that pool already hold."""


class RayResourcePool:
    def __init__(self, process_on_nodes: list[int], use_gpu: bool = True, max_colocate_count: int = 1,
                 name_prefix: Optional[str] = None, num_cpus_per_worker: float = 1,
                 pg_timeout_s: float = 120.0, detached: bool = False, distinct_nodes: bool = False):
        if not process_on_nodes or any(int(n) != n or n <= 0 for n in process_on_nodes):
            raise ValueError(f"process_on_nodes={process_on_nodes}: need a positive process count per node")
        if int(max_colocate_count) != max_colocate_count or max_colocate_count < 1:
            raise ValueError(f"max_colocate_count={max_colocate_count} must be an integer >= 1")
        if num_cpus_per_worker <= 0:
            raise ValueError(f"num_cpus_per_worker={num_cpus_per_worker} must be > 0")
        self.process_on_nodes = [int(n) for n in process_on_nodes]
        self.use_gpu = use_gpu
        self.max_colocate_count = int(max_colocate_count)
        self.name_prefix = name_prefix or f"pool_{uuid.uuid4().hex[:6]}"
        self.num_cpus_per_worker = num_cpus_per_worker
        self.pg_timeout_s = pg_timeout_s
        self.detached = detached
        self.distinct_nodes = distinct_nodes
        self._pgs: Optional[list] = None
        self._holders: list[str] = []  # worker groups placed on this pool, in creation order

    @property
    def store(self) -> list[int]:
        """Processes per node (verl's name)."""
        return list(self.process_on_nodes)

    def claim(self, group_name: str) -> None:
        """Record that `group_name` puts one actor on every bundle; fail at once if no share is left."""
        if len(self._holders) >= self.max_colocate_count:
            raise ResourcePoolExhaustedError(
                f"resource pool {self.name_prefix!r}: worker group {group_name!r} asks for {self.world_size} "
                f"bundles ({self.process_on_nodes} per node) at {self.actor_resources()} each, but 0 of "
                f"{self.world_size} bundles are free: worker groups {self._holders} hold them "
                f"(max_colocate_count={self.max_colocate_count}). Give the group its own pool, raise "
                "max_colocate_count, or colocate the roles in one group with create_colocated_worker_cls")
        self._holders.append(group_name)

    def release(self, group_name: str) -> None:
        """Undo `claim` (the group's actors are gone)."""
        if group_name in self._holders:
            self._holders.remove(group_name)

    @property
    def world_size(self) -> int:
        return sum(self.process_on_nodes)

    def bundle(self) -> dict:
        """Resources of one bundle (one worker slot)."""
        bundle = {"CPU": self.num_cpus_per_worker}
        if self.use_gpu:
            bundle["GPU"] = 1
        return bundle

    def actor_resources(self) -> dict:
        """Ray actor options for one actor in a bundle: a 1/max_colocate_count share of it."""
        share = 1.0 / self.max_colocate_count
        return {"num_cpus": self.num_cpus_per_worker * share, "num_gpus": share if self.use_gpu else 0}

    def get_placement_groups(self) -> list:
        """The placement groups, one per node, created and awaited on the first call."""
        if self._pgs is not None:
            return self._pgs
        import ray
        from ray.util.placement_group import placement_group, remove_placement_group

        lifetime = "detached" if self.detached else None
        selectors = self._node_selectors()
        pgs = [placement_group([self.bundle()] * n, strategy="STRICT_PACK", name=f"{self.name_prefix}_pg_{i}",
                               lifetime=lifetime, bundle_label_selector=selectors[i])
               for i, n in enumerate(self.process_on_nodes)]
        refs = [pg.ready() for pg in pgs]
        ready, _ = ray.wait(refs, num_returns=len(pgs), timeout=self.pg_timeout_s)
        if len(ready) != len(pgs):
            late = [i for i, ref in enumerate(refs) if ref not in ready]
            pinned = [selectors[i][0] for i in late if selectors[i]]
            for pg in pgs:  # do not leave pending groups behind to grab resources later
                remove_placement_group(pg)
            raise RuntimeError(
                f"resource pool {self.name_prefix!r}: could not reserve {self.process_on_nodes} bundles "
                f"(per node, STRICT_PACK) of {self.bundle()} within {self.pg_timeout_s:g} s; "
                f"the cluster has {ray.cluster_resources()} in total, {ray.available_resources()} free"
                + (f"; placement groups {late} pinned to {pinned} did not fit there" if pinned else "")
            )
        self._pgs = pgs
        return pgs

    def _node_selectors(self) -> list:
        """Per placement group: a label selector pinning its bundles to one node, or None."""
        if not self.distinct_nodes:
            return [None] * len(self.process_on_nodes)
        from rlsys.single_controller.nodes import NODE_ID_LABEL, pick_nodes

        need = {key: amount * max(self.process_on_nodes) for key, amount in self.bundle().items()}
        nodes = pick_nodes(len(self.process_on_nodes), need, f"resource pool {self.name_prefix!r}")
        return [[{NODE_ID_LABEL: node}] * n for node, n in zip(nodes, self.process_on_nodes)]

    def rank_nodes(self) -> list:
        """Where each rank's bundle is (RankNode per rank, rank order), once the groups are ready."""
        from rlsys.single_controller.nodes import bundle_nodes

        return [where for pg in self.get_placement_groups() for where in bundle_nodes(pg)]

    def remove_placement_groups(self) -> None:
        """Release the reserved resources (kill the pool's worker groups first)."""
        if self._pgs is None:
            return
        from ray.util.placement_group import remove_placement_group

        for pg in self._pgs:
            remove_placement_group(pg)
        self._pgs = None

"""Which Ray nodes a resource pool uses, and which of them died: the cluster side of placement.

    nodes = pick_nodes(2, {"CPU": 2.0}, "pool 'train'")   # two alive nodes holding 2 CPUs each
    dead = dead_nodes({n.node_id for n in rank_nodes})   # node ids Ray marks dead, with their IPs

A pool that spreads over nodes pins placement group i to `nodes[i]` through the label Ray
gives every node (`ray.io/node-id`), so two groups never share a node even where resources
would let them (CPU shares are fractional). `RankNode` records where a rank's bundle is, so
an error can say which node a dead rank lived on and which other ranks went with it.
"""

from __future__ import annotations

from dataclasses import dataclass

NODE_ID_LABEL = "ray.io/node-id"


@dataclass(frozen=True)
class RankNode:
    node_id: str
    node_ip: str

    def describe(self) -> str:
        return f"node {self.node_id[:12]} ({self.node_ip})"


def alive_nodes() -> list[dict]:
    """Ray's node records of the alive nodes, the driver's own node first."""
    import ray

    own = ray.get_runtime_context().get_node_id()
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return sorted(nodes, key=lambda n: n["NodeID"] != own)


def _fits(have: dict, need: dict) -> bool:
    return all(have.get(key, 0.0) + 1e-9 >= amount for key, amount in need.items())


def pick_nodes(count: int, need_per_node: dict, who: str) -> list[str]:
    """`count` distinct alive node ids whose total resources hold `need_per_node`.

    Totals, not free resources: those lag behind reservations, and every pool of a run must
    pick the same nodes in the same order (placement group i of each pool on node i). A node
    too busy now makes the pool wait its `pg_timeout_s`. Raises naming `who`, the resources
    asked and every alive node's totals."""
    from ray._private.state import total_resources_per_node  # DeveloperAPI: no public per-node call

    totals = total_resources_per_node()
    nodes = alive_nodes()
    chosen = [n["NodeID"] for n in nodes if _fits(totals.get(n["NodeID"], {}), need_per_node)][:count]
    if len(chosen) < count:
        seen = {f"{n['NodeID'][:12]} ({n['NodeManagerAddress']})":
                {k: v for k, v in totals.get(n["NodeID"], {}).items() if k in need_per_node}
                for n in nodes}
        raise RuntimeError(
            f"{who}: needs {count} distinct nodes with {need_per_node} each, but only {len(chosen)} "
            f"of the {len(nodes)} alive nodes have that (per node: {seen})")
    return chosen


def bundle_nodes(pg) -> list[RankNode]:
    """Where each bundle of a ready placement group is, in bundle order."""
    import ray
    from ray.util import placement_group_table

    table = placement_group_table(pg)
    ips = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes()}
    by_bundle = table.get("bundles_to_node_id", {})
    return [RankNode(by_bundle.get(i, "?"), ips.get(by_bundle.get(i, ""), "?")) for i in range(pg.bundle_count)]


def dead_nodes(node_ids: set[str]) -> set[str]:
    """The ids among `node_ids` that Ray does not list as alive (dead or gone)."""
    import ray

    alive = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
    return {node_id for node_id in node_ids if node_id not in alive}


class NodeDiedError(RuntimeError):
    """A node that held ranks of a group died; the message names the node and those ranks."""


# Ray marks a node dead only after its health checks fail (about 15 s with Ray's defaults:
# 5 checks, 3 s apart), while a peer's collective fails at once. A failure that looks like a
# lost peer waits this long for Ray's verdict before it is reported as the rank's own error.
NODE_DEATH_GRACE_S = 30.0
_PEER_LOSS = ("connection closed by peer", "connection reset by peer", "broken pipe", "actordiederror",
              "actorunavailableerror", "worker process died", "remote process exited")


def _looks_like_peer_loss(exc: BaseException) -> bool:
    from ray.exceptions import RayActorError

    chain = [e for e in (exc, exc.__cause__) if e is not None]
    text = " ".join(f"{type(e).__name__} {e}" for e in chain).lower()
    return any(isinstance(e, (RayActorError, TimeoutError)) for e in chain) or any(p in text for p in _PEER_LOSS)


# Worker groups alive in this driver, by name: a node's death names every group's ranks on it.
_GROUPS: dict[str, list] = {}


def register_group(name: str, rank_nodes: list) -> None:
    """Record a group's placement (the group's own list object: its role views share it)."""
    _GROUPS[name] = rank_nodes


def forget_group(name: str) -> None:
    _GROUPS.pop(name, None)


def node_death_error(rank_nodes: list, where: str, exc: BaseException,
                     grace_s: float = NODE_DEATH_GRACE_S) -> NodeDiedError | None:
    """A NodeDiedError naming each dead node of the group and its ranks, if any node is dead.

    Waits up to `grace_s` (polling Ray's node table) when `exc` looks like a lost peer and the
    group spans several nodes; a group on one node never waits."""
    import time

    try:
        ids = {n.node_id for n in rank_nodes}
        wait_s = grace_s if len(ids) > 1 and _looks_like_peer_loss(exc) else 0.0
        deadline = time.monotonic() + wait_s
        dead = dead_nodes(ids)
        while not dead and time.monotonic() < deadline:
            time.sleep(1.0)
            dead = dead_nodes(ids)
    except Exception:  # noqa: BLE001 - Ray itself gone: keep the original error
        return None
    if not dead:
        return None
    parts = []
    for node_id in sorted(dead):
        ranks = [r for r, n in enumerate(rank_nodes) if n.node_id == node_id]
        others = {name: [r for r, n in enumerate(nodes) if n.node_id == node_id] for name, nodes in _GROUPS.items()}
        elsewhere = ", ".join(f"{name!r} {ranks_there}" for name, ranks_there in others.items()
                              if ranks_there and _GROUPS[name] is not rank_nodes)  # not the failing group
        parts.append(f"{rank_nodes[ranks[0]].describe()} died; ranks {ranks} of this group ran there"
                     + (f" (and ranks of other groups: {elsewhere})" if elsewhere else ""))
    first = str(exc).splitlines()[0] if str(exc) else ""
    return NodeDiedError(f"{where}: {'; '.join(parts)} (first error seen: {type(exc).__name__}: {first})")


# ---- addresses: bind collectives to the node's IP, never to what the hostname resolves to ----
# (a common /etc/hosts maps the hostname to 127.0.0.1 or 127.0.1.1, and gloo's default device
# follows the hostname: peers on other nodes then cannot reach it)
def local_ip_toward(host: str) -> str:
    """The IP of this machine that packets to `host` leave from (no packet is sent)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((host, 9))  # UDP connect only picks a route
        return s.getsockname()[0]


def interface_of(ip: str) -> str | None:
    """The network interface that holds `ip` (e.g. for GLOO_SOCKET_IFNAME), or None."""
    import socket

    import psutil

    for name, addresses in psutil.net_if_addrs().items():
        if any(a.family == socket.AF_INET and a.address == ip for a in addresses):
            return name
    return None

"""Where a run's Ray comes from: a private local Ray, or a running cluster it joins.

    python -m rlsys.main +recipe=grpo trainer.ray_address=10.0.0.5:6379 trainer.nnodes=2

`trainer.ray_address` (null: `RAY_ADDRESS` if set, else local; `local` forces a private one)
names the cluster's GCS address. Joining, the run sends its code along in Ray's runtime env:
the `rlsys` package as a `py_module`, `trainer.ray_working_dir` (if set) as the
`working_dir` (user reward files, custom roles; workers start in it), and the environment
variables that `launch` collects. The config travels as the workers' constructor arguments.
Ray rejects resource arguments when attaching, so `trainer.ray_num_cpus` is for a local Ray
only. After start, the cluster must have `trainer.nnodes` alive nodes; the run writes
`placement.json` (group, rank, node id, node IP) to the run dir. See docs/cluster.md.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import rlsys


def ray_address(config) -> Optional[str]:
    """The cluster address to join, or None for a private local Ray."""
    address = config.trainer.ray_address or os.environ.get("RAY_ADDRESS") or None
    if address is None or address == "local":
        return None
    if address.startswith("ray://"):
        raise ValueError(f"trainer.ray_address={address!r}: Ray Client (ray://) is not supported; run the "
                         "driver on a cluster node (e.g. as a Ray job) and give the GCS address, host:6379")
    if config.trainer.ray_num_cpus is not None:
        raise ValueError(f"trainer.ray_num_cpus={config.trainer.ray_num_cpus} sizes a local Ray only, and "
                         f"trainer.ray_address={address!r} joins a running cluster (Ray rejects num_cpus when "
                         "attaching); drop trainer.ray_num_cpus or set trainer.ray_address=local")
    return address


def cluster_runtime_env(config, runtime_env: dict) -> dict:
    """`runtime_env` plus the run's code for the other nodes: rlsys as a py_module, and the
    working dir if configured. The driver's PYTHONPATH entries are paths on this machine only."""
    env = dict(runtime_env)
    env_vars = dict(env.get("env_vars", {}))
    env_vars.pop("PYTHONPATH", None)
    env["env_vars"] = env_vars
    env["py_modules"] = [str(Path(rlsys.__file__).resolve().parent)]
    working_dir = config.trainer.ray_working_dir
    if working_dir is not None:
        if not Path(working_dir).is_dir():
            raise ValueError(f"trainer.ray_working_dir={working_dir!r} is not a directory")
        env["working_dir"] = str(Path(working_dir).resolve())
    return env


def start_ray(config, runtime_env: dict, init_kwargs: dict) -> None:
    """ray.init for this run, then check that the cluster has `trainer.nnodes` nodes."""
    import ray

    address = ray_address(config)
    if address is None:
        num_cpus = config.trainer.ray_num_cpus or max(8, os.cpu_count() or 1)
        # address="local": never attach to a cluster that `ray start` on this machine left behind
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, ignore_reinit_error=True,
                 runtime_env=runtime_env, **init_kwargs)
    else:
        ray.init(address=address, ignore_reinit_error=True, runtime_env=cluster_runtime_env(config, runtime_env),
                 **init_kwargs)
    check_nodes(config, address)


def check_nodes(config, address: Optional[str]) -> None:
    from rlsys.single_controller.nodes import alive_nodes

    nodes = alive_nodes()
    if len(nodes) < config.trainer.nnodes:
        where = f"the Ray cluster at {address}" if address else "a private local Ray (one node)"
        seen = [f"{n['NodeID'][:12]} ({n['NodeManagerAddress']})" for n in nodes]
        raise ValueError(f"trainer.nnodes={config.trainer.nnodes} but {where} has {len(nodes)} alive node(s): "
                         f"{seen}; set trainer.nnodes={len(nodes)}"
                         + ("" if address else " or join a cluster with trainer.ray_address"))


def write_placement(groups: list, run_dir: Path) -> dict:
    """`placement.json`: for every worker group, each rank's node id and IP."""
    placement = {}
    for wg in groups:
        placement[wg.name_prefix] = [{"rank": rank, "node_id": where.node_id, "node_ip": where.node_ip}
                                     for rank, where in enumerate(wg.rank_nodes or [])]
    (run_dir / "placement.json").write_text(json.dumps(placement, indent=1))
    return placement

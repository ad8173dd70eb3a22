"""Issue 15.4: a run joins an existing two-node Ray cluster, spreads over both nodes, and a
node's death stops it with the node and its ranks named.

The cluster is two raylets on this machine (`ray.cluster_utils.Cluster`: a head node and one
added node, 2 logical CPUs each, in a process of its own: two_node_cluster.py); the runs are
`python -m rlsys.main` processes given `trainer.ray_address`. Both nodes have the same IP here, so "by node IP" is the same address
for both; what differs from a local run is that every rendezvous uses the node IP, not
127.0.0.1, and that placement groups are pinned to distinct nodes.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.integration.test_recipes import read_metrics

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
TWO_NODES = ("+recipe=grpo", "trainer.nnodes=2", "trainer.n_devices_per_node=1", "weight_sync.verify=true",
             "trainer.test_freq=0", "trainer.val_before_train=false")


@pytest.fixture(scope="module")
def two_node_cluster():
    """(cluster process, its JSON line): a head and one added node, 2 logical CPUs each."""
    ray_tmp = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # short: Ray's socket paths live under it
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen([sys.executable, "-m", "tests.integration.two_node_cluster"], cwd=ROOT,
                            env=dict(env, RAY_TMPDIR=ray_tmp), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        yield proc, json.loads(read_line(proc, '{"address"', "its address"))
    finally:
        proc.stdin.close()  # the cluster process shuts its own nodes down
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def read_line(proc: subprocess.Popen, prefix: str, what: str, timeout_s: float = 120) -> str:
    """The cluster process's next stdout line starting with `prefix` (other lines are skipped)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        line = proc.stdout.readline() if ready else ""
        if line.startswith(prefix):
            return line
        assert line or not ready, f"the two-node cluster process exited (rc={proc.poll()}) before {what}"
    raise AssertionError(f"the two-node cluster process gave no {what} within {timeout_s:g} s")


def start_main(run_dir: Path, address: str, *overrides: str) -> subprocess.Popen:
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "rlsys.main", f"hydra.run.dir={run_dir}", f"trainer.ray_address={address}",
           *overrides]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    log = open(run_dir / "driver.log", "w")
    return subprocess.Popen(cmd, cwd=ROOT, env=dict(env, PYTHONUNBUFFERED="1"), stdout=log,
                            stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen, run_dir: Path, timeout_s: float = 600) -> str:
    try:
        proc.wait(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = (run_dir / "driver.log").read_text()
    if proc.returncode != 0:
        print(log[-6000:])
    return log


def nodes_of(run_dir: Path) -> dict[str, list[str]]:
    """placement.json as group -> node id per rank."""
    placement = json.loads((run_dir / "placement.json").read_text())
    return {group: [r["node_id"] for r in ranks] for group, ranks in placement.items()}


def test_both_placements_span_two_nodes_then_a_node_death_names_node_and_ranks(tmp_path, two_node_cluster):
    cluster, info = two_node_cluster
    address, head_id, worker_id = info["address"], info["head"], info["worker"]

    # colocate: one WorkerDict per node; FSDP2 over gloo across the nodes, shared-memory sync
    run_dir = tmp_path / "colocate"
    log = finish(start_main(run_dir, address, *TWO_NODES, "placement=colocate", "trainer.total_steps=2"),
                 run_dir)
    assert "summary:" in log, log[-3000:]
    assert nodes_of(run_dir) == {"colocate": [head_id, worker_id]}
    rows = [r for r in read_metrics(run_dir) if r["step"] > 0]
    assert [r["step"] for r in rows] == [1, 2] and all(r["actor/grad_norm"] > 0 for r in rows)

    # split: trainers and engines on both nodes, weights over gloo by node IP; after two verified
    # syncs, the worker node's raylet is killed in the middle of the run
    run_dir = tmp_path / "split"
    proc = start_main(run_dir, address, *TWO_NODES, "placement=split", "trainer.total_steps=50",
                      "trainer.worker_timeout_s=60")
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + 480
    while not (metrics.exists() and [r["step"] for r in read_metrics(run_dir)][-1:] >= [2]):
        assert proc.poll() is None and time.monotonic() < deadline, (run_dir / "driver.log").read_text()[-3000:]
        time.sleep(0.2)
    assert nodes_of(run_dir) == {"train": [head_id, worker_id], "rollout": [head_id, worker_id]}
    killed_at = time.monotonic()
    cluster.stdin.write("kill-worker-raylet\n")
    cluster.stdin.flush()
    read_line(cluster, "killed", "the raylet kill's answer")
    log = finish(proc, run_dir, timeout_s=300)
    raised_s = time.monotonic() - killed_at
    assert proc.returncode != 0
    last = [line for line in log.splitlines() if line.strip()][-1]
    assert last.startswith("rlsys: run failed: NodeDiedError: worker group '"), last
    # the group whose call failed first, and the other pool's ranks on that node
    assert re.search(rf"node {worker_id[:12]} \(\S+\) died; ranks \[1\] of this group ran there "
                     r"\(and ranks of other groups: '(train|rollout)' \[1\]\)", last), last
    print(f"\n[two-node cluster] node death raised after {raised_s:.1f} s: {last[:300]}")


def test_a_pool_spread_over_more_nodes_than_alive_fails_naming_pool_and_nodes(ray_local):
    from rlsys.single_controller import RayResourcePool

    with pytest.raises(RuntimeError, match=r"resource pool 'spread': needs 2 distinct nodes with \{'CPU': 0.1\} "
                                           r"each, but only 1 of the 1 alive nodes"):
        RayResourcePool([1, 1], use_gpu=False, num_cpus_per_worker=0.1, name_prefix="spread",
                        distinct_nodes=True).get_placement_groups()
    pool = RayResourcePool([2], use_gpu=False, num_cpus_per_worker=0.1, name_prefix="one", distinct_nodes=True)
    try:
        own = ray_local.get_runtime_context().get_node_id()
        assert [n.node_id for n in pool.rank_nodes()] == [own, own]
    finally:
        pool.remove_placement_groups()

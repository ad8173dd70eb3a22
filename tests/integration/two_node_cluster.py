"""A two-raylet Ray cluster on this machine, in its own process, for tests/integration/test_cluster.py.

    RAY_TMPDIR=/tmp/short python -m tests.integration.two_node_cluster    # prints one JSON line

Prints {"address", "head", "worker"} (GCS address and node ids) once both raylets are up, then
reads commands from stdin: `kill-worker-raylet` kills the added node's raylet (answers
`killed`); end of input shuts the cluster down. A process of its own because
`ray.cluster_utils.Cluster` sets the global Ray state of the process that builds it and
writes `ray_current_cluster` into Ray's temp dir (so RAY_TMPDIR keeps it away from other runs'
`ray.init()` on this machine).
"""

from __future__ import annotations

import json
import sys


def main() -> None:
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    try:
        worker = cluster.add_node(num_cpus=2)
        print(json.dumps({"address": cluster.address, "head": cluster.head_node.node_id,
                          "worker": worker.node_id}), flush=True)
        for line in sys.stdin:
            if line.strip() == "kill-worker-raylet":
                worker.kill_raylet()
                print("killed", flush=True)
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()

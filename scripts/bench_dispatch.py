"""Single-controller overhead: RayWorkerGroup dispatch vs the same Ray calls written by hand.

For 2, 4 and 8 CPU workers (one local Ray with num_cpus=8, each worker asking for
`--cpus-per-worker` CPUs so 8 fit on a 2-core machine), in one run:

* latency: median wall time of one no-op `Dispatch.ONE_TO_ALL` group call (`wg.noop()`)
  vs `ray.get([w.noop.remote() for w in wg.workers])` on the same actors;
* throughput: MB/s (MiB of payload per second) of a `Dispatch.DP_COMPUTE_PROTO` echo of a
  DataProto holding one float32 tensor of `--mb` MiB (each rank returns its chunk unchanged;
  the group concatenates) vs the same movement by hand: chunk the tensor into world-size
  pieces (each cloned to its own storage, as DataProto's pickling does), `ray.put` each, call a plain `echo_raw.remote(ref)` per actor, `ray.get` the results
  and `torch.cat` them.

Group and raw measurements alternate call by call, so load drift hits both alike.
Targets: group latency <= 1.2x raw; group throughput >= 0.7x raw. Prints a markdown table.

Run:  python scripts/bench_dispatch.py [--calls 200] [--mb 64] [--reps 10]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import ray  # noqa: E402
import torch  # noqa: E402

from rlsys.protocol import DataProto  # noqa: E402
from rlsys.single_controller import (  # noqa: E402
    Dispatch, RayClassWithInitArgs, RayResourcePool, RayWorkerGroup, Worker, register,
)

LATENCY_TARGET = 1.2      # group / raw, at most
THROUGHPUT_TARGET = 0.7   # group / raw, at least


class BenchWorker(Worker):
    """A no-op and an echo, as group methods and as a plain actor method."""

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def noop(self):
        return None

    @register(dispatch_mode=Dispatch.DP_COMPUTE_PROTO)
    def echo(self, data: DataProto) -> DataProto:
        return data

    def echo_raw(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure_latency(wg: RayWorkerGroup, calls: int, warmup: int = 20) -> tuple[float, float]:
    """(median group seconds, median raw seconds) of a no-op call to every rank, interleaved."""
    raw = lambda: ray.get([w.noop.remote() for w in wg.workers])  # noqa: E731
    for _ in range(warmup):
        wg.noop()
        raw()
    group_t, raw_t = [], []
    for _ in range(calls):
        group_t.append(_timed(wg.noop))
        raw_t.append(_timed(raw))
    return statistics.median(group_t), statistics.median(raw_t)


def measure_throughput(wg: RayWorkerGroup, mib: int, reps: int, warmup: int = 2) -> tuple[float, float]:
    """(group MB/s, raw MB/s) of echoing `mib` MiB of float32 through every rank; medians."""
    n = wg.world_size
    rows = 1024 * n
    tensor = torch.randn(rows, mib * 2**20 // 4 // rows)
    batch = DataProto.from_dict({"x": tensor})

    def group():
        out = wg.echo(batch)
        assert out.batch["x"].shape == tensor.shape

    def raw():
        # clone: a chunk is a view, and pickling a view ships the whole storage (DataProto compacts too)
        refs = [ray.put(chunk.clone()) for chunk in tensor.chunk(n)]
        out = torch.cat(ray.get([w.echo_raw.remote(r) for w, r in zip(wg.workers, refs)]))
        assert out.shape == tensor.shape

    for _ in range(warmup):
        group()
        raw()
    group_t, raw_t = [], []
    for _ in range(reps):
        group_t.append(_timed(group))
        raw_t.append(_timed(raw))
    nbytes_mib = tensor.numel() * 4 / 2**20
    return nbytes_mib / statistics.median(group_t), nbytes_mib / statistics.median(raw_t)


def bench_one(n: int, args) -> list[tuple]:
    pool = RayResourcePool([n], use_gpu=False, name_prefix=f"bench{n}", num_cpus_per_worker=args.cpus_per_worker)
    wg = RayWorkerGroup(pool, RayClassWithInitArgs(BenchWorker), name_prefix=f"bench{n}")
    try:
        lat_g, lat_r = measure_latency(wg, args.calls)
        thr_g, thr_r = measure_throughput(wg, args.mb, args.reps)
    finally:
        wg.shutdown()
        pool.remove_placement_groups()
    lat_ratio, thr_ratio = lat_g / lat_r, thr_g / thr_r
    return [
        (n, "no-op ONE_TO_ALL latency (median)", f"{lat_g * 1e3:.3f} ms", f"{lat_r * 1e3:.3f} ms",
         f"{lat_ratio:.2f}x", f"<= {LATENCY_TARGET}x", "PASS" if lat_ratio <= LATENCY_TARGET else "FAIL"),
        (n, f"DP_COMPUTE_PROTO echo {args.mb} MB throughput", f"{thr_g:.0f} MB/s", f"{thr_r:.0f} MB/s",
         f"{thr_ratio:.2f}x", f">= {THROUGHPUT_TARGET}x", "PASS" if thr_ratio >= THROUGHPUT_TARGET else "FAIL"),
    ]


def markdown(rows: list[tuple]) -> str:
    head = "| workers | metric | rlsys | raw | ratio | target | result |\n|---|---|---|---|---|---|---|\n"
    return head + "".join("| " + " | ".join(str(c) for c in row) + " |\n" for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="2,4,8", help="comma-separated group sizes")
    parser.add_argument("--calls", type=int, default=200, help="timed no-op calls per group size")
    parser.add_argument("--mb", type=int, default=64, help="MiB of float32 payload per echo")
    parser.add_argument("--reps", type=int, default=10, help="timed echoes per group size")
    parser.add_argument("--cpus-per-worker", type=float, default=0.25)
    args = parser.parse_args()
    pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": pythonpath}})
    rows = []
    try:
        for n in [int(x) for x in args.workers.split(",")]:
            rows += bench_one(n, args)
            print(markdown(rows[-2:]), flush=True)
    finally:
        ray.shutdown()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, ray {ray.__version__}, torch {torch.__version__}\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()

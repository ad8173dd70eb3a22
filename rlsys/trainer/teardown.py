"""The end of every run, clean or not: engines stopped, Ray stopped, /dev/shm as it was found.

    teardown = RunTeardown()
    start_ray(); teardown.catch_sigterm()   # from here SIGTERM raises SystemExit, so `finally` runs
    try: roles = ...; teardown.roles = roles; ...; teardown.record()
    finally: teardown.close(ray.shutdown)

`close` shuts every rollout engine down (vLLM then unlinks its `psm_*` message-queue segments
and its `sem.mp-*` semaphores) within `ENGINE_SHUTDOWN_S`, stops Ray, waits (bounded) for the
run's processes to exit, and unlinks what they still left in /dev/shm: the names that
processes of this run had mapped (read from /proc/<pid>/maps of the driver's descendants, i.e.
the local Ray and everything under it, when `record()` and `close()` ran). So a worker that
was SIGKILLed (Ray then kills its engine's processes and their resource tracker, which
would have unlinked them) leaves nothing either. Names of other runs are never touched: only
names our own processes mapped are removed. A run on an existing Ray cluster has no local
descendants to read; there only the engine shutdown applies.

After `kill -9` of the driver nothing here runs. Measured on the 2-core CPU (GRPO colocate,
Ray 2.60): /dev/shm holds none of the run's names (the weight-sync segments were unlinked at
the first sync; the in-process engine has no queues); GCS, raylet, the WorkerDict, the idle
worker and the forkserver/resource-tracker helpers are gone within 2-3 s; Ray's
DashboardAgent and RuntimeEnvAgent stay about 60 s (61.4 s), holding no /dev/shm entries. They
notice the raylet's death within ~2 s and then try to report it to the dead GCS with a timeout
of 60 s that Ray hard-codes (`publish_error_to_driver`, ray/_private/utils.py); setting
`RAY_gcs_rpc_server_reconnect_timeout_s=5` did not shorten it (61.4 s again), so we leave it.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import psutil

SHM_DIR = "/dev/shm"
SHM_PREFIXES = ("rlsys_ws_", "psm_", "sem.mp-")  # ours (weight sync), vLLM's queues, multiprocessing semaphores
ENGINE_SHUTDOWN_S = 30.0  # bound on the rollout ranks' engine shutdown
PROCESS_EXIT_S = 10.0  # bound on the run's processes exiting after Ray stops


def mapped_shm_names(pids) -> set[str]:
    """Names in /dev/shm with one of `SHM_PREFIXES` that processes `pids` have mapped."""
    names = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/maps") as maps:
                lines = maps.read().splitlines()
        except OSError:  # gone, or not ours to read
            continue
        for line in lines:
            path = line.split(maxsplit=5)[-1] if line.count(" ") >= 5 else ""
            if path.startswith(SHM_DIR + "/"):
                name = path[len(SHM_DIR) + 1:].removesuffix(" (deleted)")
                if name.startswith(SHM_PREFIXES) and "/" not in name:
                    names.add(name)
    return names


def descendants() -> list[psutil.Process]:
    try:
        return psutil.Process().children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _raise_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


class RunTeardown:
    def __init__(self):
        self.roles = None
        self.names: set[str] = set()
        self.processes: dict[int, psutil.Process] = {}
        self._previous_sigterm = None  # set while our SIGTERM handler is installed
        self._catching = False

    def catch_sigterm(self) -> None:
        """From now on SIGTERM raises SystemExit(143), so `close` runs. Call it after ray.init:
        Ray's driver installs a C-level SIGTERM handler there that aborts the process (rc -6)."""
        if threading.current_thread() is threading.main_thread() and not self._catching:
            previous = signal.signal(signal.SIGTERM, _raise_on_sigterm)
            self._previous_sigterm = signal.SIG_DFL if previous is None else previous  # None: set from C
            self._catching = True

    def record(self) -> None:
        """Remember the run's processes and the /dev/shm names they map now."""
        procs = descendants()
        self.processes.update({p.pid: p for p in procs})
        self.names |= mapped_shm_names(p.pid for p in procs)

    def _shutdown_engines(self) -> None:
        from rlsys.single_controller.results import get_by_rank, one_line

        rollout = getattr(self.roles, "rollout", None)
        if rollout is None or not getattr(rollout, "workers", None):
            return
        try:
            refs = rollout.execute_all_async("shutdown_engine")
            get_by_rank(refs, list(range(len(refs))), "rollout engine shutdown", ENGINE_SHUTDOWN_S)
        except TimeoutError as exc:
            print(f"rlsys: {one_line(exc)}; stopping Ray anyway", file=sys.stderr, flush=True)
        except Exception:  # noqa: BLE001 - a dead rank: its engine went with it; the sweep covers it
            pass

    def sweep(self) -> list[str]:
        """Wait (bounded) for the recorded processes to exit, then unlink the names still there."""
        deadline = time.monotonic() + PROCESS_EXIT_S
        alive = list(self.processes.values())
        while alive and time.monotonic() < deadline:
            alive = [p for p in alive if _running(p)]
            if alive:
                time.sleep(0.1)
        removed = []
        in_use_here = mapped_shm_names([os.getpid()])  # the driver's own (a multirun's next job may use them)
        for name in sorted(self.names - in_use_here):
            try:
                os.unlink(os.path.join(SHM_DIR, name))
                removed.append(name)
            except FileNotFoundError:
                continue
        return removed

    def close(self, stop_ray) -> list[str]:
        """Engines down, `stop_ray()`, leftovers unlinked; returns the names this had to unlink."""
        try:
            self.record()
            self._shutdown_engines()
            self.record()
        finally:
            try:
                stop_ray()
            finally:
                if self._catching:
                    signal.signal(signal.SIGTERM, self._previous_sigterm)
                    self._catching = False
        removed = self.sweep()
        if removed:  # an engine or worker that did not shut down cleanly
            print(f"rlsys: unlinked {len(removed)} /dev/shm entries the run's processes left: "
                  f"{', '.join(removed[:4])}{' ...' if len(removed) > 4 else ''}", file=sys.stderr, flush=True)
        return removed

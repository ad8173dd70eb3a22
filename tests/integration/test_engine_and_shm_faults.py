"""Issue 15, points 1 and 2: a dead vLLM engine raises naming the rollout rank instead of
hanging until `trainer.worker_timeout_s` (600 s), and no run leaves entries in /dev/shm.

Each case is one `python -m rlsys.main` run on CPU in its own session. While it runs, the test
samples which /dev/shm names (`rlsys_ws_*`, vLLM's `psm_*`, `sem.mp-*`) the run's processes map,
and which `rlsys_ws_<pid>_*` segments carry one of their pids; after the run exits, none of
them may remain. Only names of this run are checked: other runs on the machine come and go.

The kill lands inside a call on the engine: the victim is SIGSTOPped once step 1 is logged,
so whatever call the driver makes next (generate, or the weight sync) blocks on it; 3 s later
it is SIGKILLed, and the driver must exit within `KILL_EXIT_S` (the configured bound of the
test, far below the 600 s worker timeout the run keeps).
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.integration.test_checkpoint import kill_session, session_processes, start_run, wait_for
from tests.integration.test_recipes import read_metrics

pytestmark = pytest.mark.slow
SHM = "/dev/shm"
PREFIXES = ("rlsys_ws_", "psm_", "sem.mp-")
MAPPED = re.compile(r"\s/dev/shm/(\S+)")
STEP_SLEEP_S = "3"  # before each step's generate: the SIGSTOP lands there, so the next generate blocks
KILL_EXIT_S = 60  # the bound on raising after an engine death
SHORT = ("+recipe=grpo", "trainer.test_freq=0", "trainer.val_before_train=false")


class ShmSampler:
    """Names in /dev/shm that processes of session `sid` map or created, sampled until stop()."""

    def __init__(self, sid: int, before: set[str], period_s: float = 0.3):
        self.sid, self.before, self.period_s, self.names = sid, before, period_s, set()
        self.pids: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def sample(self) -> None:
        for proc in session_processes(self.sid):
            self.pids.add(proc.pid)
            try:
                with open(f"/proc/{proc.pid}/maps") as maps:
                    found = MAPPED.findall(maps.read())
            except OSError:
                continue
            self.names |= {n for n in found if n.startswith(PREFIXES)}
        self.names |= {n for n in os.listdir(SHM) if n.startswith("rlsys_ws_") and n not in self.before
                       and int(n.split("_")[2]) in self.pids}  # not before: a stale one of a reused pid

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.sample()

    def stop(self) -> set[str]:
        self._stop.set()
        self._thread.join(timeout=10)
        return self.names


def ours(names) -> set[str]:
    return {n for n in names if n.startswith(PREFIXES)}


def run_and_check_shm(run_dir, overrides, env_extra, act=None):
    """Start a run, let `act(proc)` act on it, wait for its exit; returns (proc, seen, left, new)."""
    before = ours(os.listdir(SHM))
    proc = start_run(run_dir, *overrides, env_extra=env_extra)
    sampler = ShmSampler(proc.pid, before)
    try:
        if act is not None:
            act(proc)
        proc.wait(timeout=KILL_EXIT_S if act is not None else 600)
    finally:
        seen = sampler.stop()
        leaked = kill_session(proc)
    left = sorted(seen & set(os.listdir(SHM)))
    new = sorted(ours(os.listdir(SHM)) - before)  # may include other runs' names: reported only
    print(f"\n[{run_dir.name}] rc={proc.returncode}; /dev/shm names of the run seen {len(seen)} "
          f"({', '.join(sorted({n.split('_')[0].split('-')[0] for n in seen}))}), left after exit {len(left)}; "
          f"our-prefix entries before {len(before)}, new after {len(new)}; processes left {len(leaked)}")
    return proc, seen, left, (run_dir / "driver.log").read_text()


def stop_then_kill(find_victim, what: str):
    """Once step 1 is logged: SIGSTOP the victim (the next engine call blocks on it), SIGKILL 3 s later."""
    def act(proc):
        wait_for(lambda: metrics_has_step(proc), proc)
        victims = find_victim(proc.pid)
        assert victims, f"no {what} process in the run's session"
        for pid in victims:
            os.kill(pid, signal.SIGSTOP)
        time.sleep(3.0)
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        act.killed_at = time.monotonic()
    return act


def metrics_has_step(proc) -> bool:
    run_dir = next(a for a in proc.args if a.startswith("hydra.run.dir=")).split("=", 1)[1]
    try:
        return any(r["step"] >= 1 for r in read_metrics(Path(run_dir)))
    except (FileNotFoundError, ValueError):
        return False


def processes_named(sid: int, needle: str) -> list[int]:
    found = []
    for proc in session_processes(sid):
        try:
            if needle in " ".join(proc.cmdline()) or needle in proc.name():
                found.append(proc.pid)
        except Exception:  # noqa: BLE001 - exited meanwhile
            continue
    return found


def last_line(text: str) -> str:
    return [line for line in text.splitlines() if line.strip()][-1]


def test_killed_engine_core_process_raises_naming_the_rollout_rank(tmp_path):
    """A separate engine-core process (as on GPU, or TP > 1 on CPU): vLLM's multiprocessing on."""
    act = stop_then_kill(lambda sid: processes_named(sid, "VLLM::EngineCore"), "engine-core")
    proc, seen, left, log = run_and_check_shm(
        tmp_path / "engine_core_killed", (*SHORT, "trainer.total_steps=50"),
        {"VLLM_ENABLE_V1_MULTIPROCESSING": "1", "RLSYS_TEST_STEP_SLEEP_S": STEP_SLEEP_S}, act)
    print(f"[engine core killed] driver exited {time.monotonic() - act.killed_at:.1f} s after the SIGKILL")
    line = last_line(log)
    assert proc.returncode != 0 and line.startswith("rlsys: run failed: EngineDiedError: "), log[-3000:]
    assert "rollout rank 0: the vLLM engine died: engine process" in line and "VLLM::EngineCore" in line
    assert any(n.startswith("psm_") for n in seen)  # the multiprocessing engine's queues were seen...
    assert left == []  # ...and nothing of the run is left


def test_killed_worker_with_in_process_engine_raises_and_leaves_no_shm(tmp_path):
    """The CPU default (TP 1): the engine runs inside the colocated worker, so killing the engine
    is killing that worker; Ray reports it at once."""
    act = stop_then_kill(lambda sid: processes_named(sid, "WorkerDict"), "WorkerDict")
    proc, seen, left, log = run_and_check_shm(
        tmp_path / "worker_killed", (*SHORT, "trainer.total_steps=50"), {"RLSYS_TEST_STEP_SLEEP_S": STEP_SLEEP_S}, act)
    print(f"[worker killed] driver exited {time.monotonic() - act.killed_at:.1f} s after the SIGKILL")
    line = last_line(log)
    assert proc.returncode != 0 and line.startswith("rlsys: run failed: WorkerDiedError: "), log[-3000:]
    assert "rank 0: the worker process died" in line
    assert left == []


def test_clean_interrupted_and_terminated_runs_leave_dev_shm_as_found(tmp_path):
    proc, seen, left, log = run_and_check_shm(tmp_path / "clean", (*SHORT, "trainer.total_steps=2"), {})
    assert proc.returncode == 0, log[-3000:]
    assert any(n.startswith("rlsys_ws_") for n in seen) and left == []

    for sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C; a scheduler's stop (SIGTERM now raises SystemExit)
        def interrupt(proc, sig=sig):
            wait_for(lambda: metrics_has_step(proc), proc)
            os.kill(proc.pid, sig)  # the driver only, as a shell's Ctrl-C or a scheduler would
        proc, seen, left, log = run_and_check_shm(tmp_path / sig.name, (*SHORT, "trainer.total_steps=50"),
                                                  {"RLSYS_TEST_STEP_SLEEP_S": "0.5"}, interrupt)
        if sig == signal.SIGINT:
            assert proc.returncode != 0 and "KeyboardInterrupt" in log, log[-3000:]
        else:  # SystemExit(128 + 15) through the teardown, not Ray's aborting handler (rc -6)
            assert proc.returncode == 128 + signal.SIGTERM, log[-3000:]
        assert any(n.startswith("rlsys_ws_") for n in seen) and left == []

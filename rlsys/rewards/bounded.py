"""Reward calls in a child process, each bounded by `reward.timeout_s` seconds.

A hung reward function (an endless loop, a stuck network call) cannot be stopped inside the
reward worker, which shares its process with the actor; so with a timeout the function runs in a
child process that receives a batch and sends back one outcome per sample as it finishes. When
no outcome comes within `timeout_s`, the child is killed, that sample gets a `RewardTimeoutError`,
and a fresh child scores the rest of the batch: the worker stays usable. Children are forked
from a forkserver that has imported rlsys already, so a restart costs milliseconds, not the
seconds of a torch import. Worst case for a batch: (number of hung samples) x `timeout_s`.

    caller = BoundedCaller("my_rewards.py:score", format_score=0.0, timeout_s=5.0)
    for i, score, error in caller.outcomes([(data_source, text, ground_truth, extra), ...]):
        ...   # score is a float, or None with error the exception
"""

from __future__ import annotations

import multiprocessing
import pickle
from typing import Iterator, Optional

_STARTUP_S = 120.0  # a fresh child may take this long to load the function before its first call


class RewardTimeoutError(TimeoutError):
    """A reward call gave no result within `reward.timeout_s`; its process was killed."""


class RewardProcessDied(RuntimeError):
    """The child process running the reward function exited in the middle of a call."""


def _child_main(conn, fn_spec: Optional[str], format_score: float) -> None:
    """Child loop: load the function, then for each job send (index, score, error) per sample."""
    from rlsys.rewards.scoring import as_score, prepare_reward_fn

    fn = prepare_reward_fn(fn_spec, format_score)
    conn.send("ready")
    while True:
        try:
            job = conn.recv()
        except EOFError:  # the reward worker closed the pipe or exited
            return
        if job is None:
            return
        for i, args in job:
            try:
                outcome = (i, as_score(fn(*args)), None)
            except Exception as exc:  # noqa: BLE001 -- user code: reported per sample
                outcome = (i, None, exc)
            try:
                conn.send(outcome)
            except (pickle.PicklingError, TypeError, AttributeError):  # an exception that does not pickle
                conn.send((i, None, RuntimeError(f"{type(outcome[2]).__name__}: {outcome[2]}")))


class BoundedCaller:
    """Scores samples in a child process; a call over `timeout_s` is killed and reported."""

    def __init__(self, fn_spec: Optional[str], format_score: float, timeout_s: float):
        self.fn_spec, self.format_score, self.timeout_s = fn_spec, format_score, timeout_s
        self._ctx = multiprocessing.get_context("forkserver")
        self._ctx.set_forkserver_preload(["rlsys.rewards.scoring"])
        self._proc = None
        self._conn = None

    def _start(self) -> None:
        parent, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(target=_child_main, args=(child, self.fn_spec, self.format_score),
                                       daemon=True, name="rlsys-reward")
        self._proc.start()
        child.close()
        self._conn = parent
        if not parent.poll(_STARTUP_S) or parent.recv() != "ready":
            self.close()
            raise RewardProcessDied(f"the reward process for {self.fn_spec or 'built-in'} did not start "
                                    f"within {_STARTUP_S:g} s")

    def close(self) -> None:
        """Kill the child (a later call starts a new one)."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(timeout=10)
            self._conn.close()
        self._proc = self._conn = None

    def outcomes(self, samples: list[tuple]) -> Iterator[tuple[int, Optional[float], Optional[BaseException]]]:
        """(index, score, None) or (index, None, error) per sample, in order."""
        todo = list(range(len(samples)))
        try:
            while todo:
                if self._proc is None:
                    self._start()
                self._conn.send([(i, samples[i]) for i in todo])
                while todo:
                    i = todo[0]
                    try:
                        ready = self._conn.poll(self.timeout_s)
                        outcome = self._conn.recv() if ready else None
                    except (EOFError, OSError):
                        outcome = (i, None, RewardProcessDied("the reward process exited during this call"))
                        self.close()
                    if outcome is None:
                        self.close()
                        outcome = (i, None, RewardTimeoutError(
                            f"no result within reward.timeout_s={self.timeout_s:g} s (the call was killed)"))
                    todo.pop(0)
                    yield outcome
                    if self._proc is None:
                        break  # a fresh child takes the rest of the batch
        finally:
            if todo:  # the consumer stopped early (on_error=raise): the child still works on the old job
                self.close()

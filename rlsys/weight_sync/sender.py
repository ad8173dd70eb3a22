"""Sender side of weight sync (runs in the actor/trainer process), common to all transports.

A sender turns `(hf_name, tensor)` pairs into buckets (`rlsys.weight_sync.buckets`), hands
the receivers one payload per sync (bucket layout + transport handles + optional
fingerprints), and raises `WeightSyncMismatch` if a receiver reports a mismatch. It never
holds the vLLM engine: it talks to the receivers through `call_receivers(method, *args)`,
which must run `method` on every vLLM worker and return their results as a list, e.g.

    call_receivers = lambda method, *args: llm.collective_rpc(method, args=args)

or a Ray call into the rollout workers. Two styles of transport:

* staged (shm, cuda_ipc): the sender writes every bucket first, then makes one receive
  call; receivers map the buckets themselves; the sender frees them after the call returns;
* streamed (gloo, nccl): the receive call is started in a background thread and stays in
  flight while the sender broadcasts bucket after bucket; the call returns when all are
  loaded. Broadcast transports need `connect(call_receivers)` once before the first sync.
"""

from __future__ import annotations

import abc
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import torch

from rlsys.weight_sync.buckets import BucketPlan, mb_to_bytes, plan_for_tensors
from rlsys.weight_sync.verify import WeightSyncMismatch, fingerprints

CallReceivers = Callable[..., list]


@dataclass
class SyncReport:
    """What one sync moved and how long it took (sender wall clock)."""

    num_tensors: int
    num_bytes: int
    num_buckets: int
    sync_s: float
    receivers: list[dict] = field(default_factory=list)


def named_parameters_for_sync(model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """HF-named parameters to send; tied weights appear once (vLLM re-ties them)."""
    return [(name, p.detach()) for name, p in model.named_parameters()]


def check_reports(reports: Sequence[dict], verify: bool) -> None:
    """Raise WeightSyncMismatch for the first receiver mismatch; ValueError for gaps."""
    for report in reports:
        if report.get("mismatch"):
            raise WeightSyncMismatch(report["mismatch"], report.get("rank"), report["mismatch_stage"])
    if verify:
        for report in reports:
            if report.get("not_loaded"):
                raise ValueError(
                    f"vLLM parameters not updated by the sync on receiver rank "
                    f"{report.get('rank')}: {report['not_loaded'][:5]}"
                )


class WeightSender(abc.ABC):
    """Base class: bucketing, payload, verification, report. Subclasses move the bytes."""

    transport: str = ""

    def __init__(self, bucket_size_mb: float = 256, verify: bool = False):
        self.bucket_size_bytes = mb_to_bytes(bucket_size_mb)
        self.verify = verify
        self.load_mode = "auto"  # receivers' auto | layerwise | direct (receiver.py); make_sender sets it

    def connect(self, call_receivers: CallReceivers) -> None:
        """Set up a group with the receivers (broadcast transports); no-op by default."""

    def close(self, call_receivers: CallReceivers | None = None) -> None:
        """Release the group (broadcast transports); no-op by default."""

    def sync(
        self,
        named_tensors: Iterable[tuple[str, torch.Tensor]],
        call_receivers: CallReceivers,
        corrupt_param_for_test: str | None = None,
    ) -> SyncReport:
        """Send every tensor to every receiver and have them load it. Blocks until loaded."""
        start = time.perf_counter()
        named = [(n, t.detach()) for n, t in named_tensors]
        plans = plan_for_tensors(named, self.bucket_size_bytes)
        payload: dict[str, Any] = {
            "transport": self.transport,
            "buckets": [p.to_wire() for p in plans],
            # only a rank that calls the receivers sends them (cuda_ipc export-only ranks pass None)
            "fingerprints": fingerprints(named) if self.verify and call_receivers is not None else None,
            "corrupt_param_for_test": corrupt_param_for_test,
            "load_mode": self.load_mode,
        }
        reports = self._transfer(named, plans, payload, call_receivers)  # [] on non-sending ranks
        check_reports(reports, self.verify)
        return SyncReport(
            num_tensors=len(named),
            num_bytes=sum(p.nbytes for p in plans),
            num_buckets=len(plans),
            sync_s=time.perf_counter() - start,
            receivers=list(reports),
        )

    @abc.abstractmethod
    def _transfer(
        self, named: list, plans: list[BucketPlan], payload: dict, call_receivers: CallReceivers
    ) -> list[dict]:
        """Move the buckets; return the receivers' reports."""


class BroadcastWeightSender(WeightSender):
    """Base of the streamed transports (gloo, nccl): a group of this process (rank 0) and the
    receivers, made by the subclass's `connect`, left by `close`."""

    def __init__(self, bucket_size_mb: float, verify: bool, host: str, timeout_s: float,
                 connect_timeout_s: float):
        super().__init__(bucket_size_mb, verify)
        self.host, self.timeout_s, self.connect_timeout_s = host, timeout_s, connect_timeout_s
        self.group: Any = None

    def connected_group(self):
        if self.group is None:
            raise ValueError(f"{type(self).__name__}.sync called before connect()")
        return self.group

    def close(self, call_receivers: CallReceivers | None = None) -> None:
        if call_receivers is not None:
            call_receivers("rlsys_close_groups")
        if self.group is not None:
            self.group.close()
        self.group = None


class _Call(threading.Thread):
    """Runs `fn(*args)` in a thread and keeps its result or exception."""

    def __init__(self, fn: Callable, *args: Any):
        super().__init__(daemon=True, name="rlsys-weight-sync-rpc")
        self.fn, self.args = fn, args
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.fn(*self.args)
        except BaseException as exc:  # re-raised in the caller's thread by `join_result`
            self.error = exc

    def join_result(self, timeout_s: float) -> Any:
        self.join(timeout_s)
        if self.is_alive():
            raise TimeoutError(f"receiver call {self.args[:1]} did not return within {timeout_s:.0f} s")
        if self.error is not None:
            raise self.error
        return self.result


def call_in_background(fn: Callable, *args: Any) -> _Call:
    """Start `fn(*args)` in a daemon thread; `.join_result(timeout_s)` returns or re-raises."""
    call = _Call(fn, *args)
    call.start()
    return call

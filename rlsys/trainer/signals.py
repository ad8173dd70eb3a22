"""Defer SIGINT/SIGTERM while a checkpoint is written, so a Ctrl-C does not discard the save.

    with deferred_signals("saving checkpoint global_step_4", max_defer_s=60.0):
        write_checkpoint()
    # a signal that arrived meanwhile is re-delivered here: the run exits as it would have

A signal arriving inside the block is recorded and one line says the save finishes first; when
the block ends it is re-raised with the previous handler (SIGINT -> KeyboardInterrupt, SIGTERM
-> the default: exit). A second signal, or `max_defer_s` after the first, is delivered at once
(the save is abandoned; its `.tmp_*` directory is removed at the next start). Outside the
main thread (where Python cannot set handlers) the block runs without deferral.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

DEFERRED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def deferred_signals(what: str, max_defer_s: float = 60.0):
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in DEFERRED_SIGNALS}
    pending: list[int] = []
    timer: list[threading.Timer] = []

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for t in timer:
            t.cancel()

    def handler(signum, frame):
        if pending:  # second signal, or the bound ran out: deliver now
            restore()
            print(f"{signal.Signals(signum).name} again: stopping without finishing {what}",
                  file=sys.stderr, flush=True)
            signal.raise_signal(signum)
            return
        pending.append(signum)
        print(f"{signal.Signals(signum).name} received: finishing {what} first (at most {max_defer_s:g} s; "
              "send it again to stop at once)", file=sys.stderr, flush=True)
        # A real signal to the main thread (not _thread.interrupt_main), so a blocking sleep wakes too.
        t = threading.Timer(max_defer_s, signal.pthread_kill, args=(threading.main_thread().ident, signum))
        t.daemon = True
        t.start()
        timer.append(t)

    for sig in DEFERRED_SIGNALS:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        restore()
    if pending:
        print(f"{what} done; now handling {signal.Signals(pending[0]).name}", file=sys.stderr, flush=True)
        signal.raise_signal(pending[0])

"""Issue 16.4 (unit): SIGINT/SIGTERM inside `deferred_signals` wait for the block, bounded; a second one is at once."""

from __future__ import annotations

import signal
import time

import pytest

from rlsys.trainer.signals import deferred_signals


@pytest.fixture(autouse=True)
def python_sigint_handler():
    """Python's own SIGINT handler for each test: a process started in the background (CI
    runners, `cmd &`) inherits SIGINT ignored, and Python then installs no handler."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_sigint_waits_until_the_block_ends_then_interrupts(capsys):
    done = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_signals("saving checkpoint global_step_3"):
            signal.raise_signal(signal.SIGINT)
            time.sleep(0.2)
            done.append("save finished")
    assert done == ["save finished"]
    err = capsys.readouterr().err
    assert "SIGINT received: finishing saving checkpoint global_step_3 first" in err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


def test_sigterm_goes_to_the_previous_handler_after_the_block():
    seen = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append((signum, len(done))))
    done = []
    try:
        with deferred_signals("save"):
            signal.raise_signal(signal.SIGTERM)
            done.append(1)
        assert seen == [(signal.SIGTERM, 1)]  # delivered once, after the save
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_second_sigint_interrupts_at_once():
    steps = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_signals("save"):
            signal.raise_signal(signal.SIGINT)
            steps.append("first deferred")
            signal.raise_signal(signal.SIGINT)
            steps.append("never reached")
    assert steps == ["first deferred"]


def test_deferral_is_bounded():
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        with deferred_signals("a save that hangs", max_defer_s=0.3):
            signal.raise_signal(signal.SIGINT)
            time.sleep(30)
    assert time.monotonic() - start < 5


def test_no_signal_no_effect():
    with deferred_signals("save"):
        pass
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

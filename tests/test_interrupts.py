"""hwnas.interrupts: an interrupt waits for the end of a deferred section (a storage call under way), not for the
end of an interruptible wait inside it; a second one never waits."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from hwnas import interrupts


@pytest.fixture
def installed() -> Iterator[None]:
    old = interrupts.install()
    try:
        yield
    finally:
        interrupts.restore(old)


def _signal() -> None:
    os.kill(os.getpid(), signal.SIGTERM)  # the handler runs at the next bytecode of the main thread


def test_an_interrupt_in_a_deferred_section_is_raised_at_its_end(installed: None) -> None:
    done = []
    with pytest.raises(KeyboardInterrupt), interrupts.deferred():
        with interrupts.deferred():  # nested: held until the outermost ends
            _signal()
            done.append("inner")
        done.append("outer")
    assert done == ["inner", "outer"]


def test_an_interruptible_wait_is_broken_at_once(installed: None) -> None:
    done = []
    with pytest.raises(KeyboardInterrupt), interrupts.deferred(), interrupts.interruptible():
        _signal()
        done.append("after")
    assert done == []


def test_a_held_interrupt_is_raised_when_an_interruptible_wait_starts(installed: None) -> None:
    done = []
    with pytest.raises(KeyboardInterrupt), interrupts.deferred():
        _signal()
        done.append("held")
        with interrupts.interruptible():
            done.append("waited")
    assert done == ["held"]


def test_a_second_interrupt_does_not_wait(installed: None) -> None:
    done = []
    with pytest.raises(KeyboardInterrupt), interrupts.deferred():
        _signal()
        done.append("first held")
        _signal()
        done.append("second held")
    assert done == ["first held"]


def test_outside_a_section_it_is_raised_at_once(installed: None) -> None:
    with pytest.raises(KeyboardInterrupt):
        _signal()
        for _ in range(1000):  # bytecodes for the handler to run at
            pass

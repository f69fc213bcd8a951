"""Progress reporting as a small contract, so connectors never import a UI library.

A long step does::

    with progress.task("embedding", total=len(texts)) as advance:
        for batch in batches:
            ...
            advance(len(batch))

The CLI passes a rich implementation; everything else defaults to :data:`SILENT`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol


class Progress(Protocol):
    def task(
        self, description: str, total: int | None = None
    ):  # -> ContextManager[Callable[[int], None]]
        ...


class _Silent:
    @contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
        def advance(n: int = 1) -> None:
            return None

        yield advance


SILENT: Progress = _Silent()


class LogProgress:
    """Progress as plain lines, for a log or a terminal that is not interactive: one line when
    a task starts, one every ``every`` seconds while it advances (``done/total`` and seconds
    so far), one when it ends. Tasks shorter than ``quiet_below`` seconds print only their
    start line. Thread-safe enough for one writer per task."""

    def __init__(self, say: Callable[[str], object], every: float = 10.0, quiet_below: float = 3.0):
        self._say = say
        self._every = every
        self._quiet_below = quiet_below

    @contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
        import time

        t0 = time.monotonic()
        state = {"done": 0, "last": t0}
        of = f"/{total}" if total is not None else ""
        self._say(f"{description} ..." + (f" ({total} to do)" if total is not None else ""))

        def advance(n: int = 1) -> None:
            state["done"] += n
            now = time.monotonic()
            if now - state["last"] >= self._every:
                state["last"] = now
                self._say(f"{description}: {int(state['done'])}{of}, {now - t0:.0f} s")

        try:
            yield advance
        finally:
            took = time.monotonic() - t0
            if took >= self._quiet_below:
                self._say(f"{description}: done in {took:.0f} s")

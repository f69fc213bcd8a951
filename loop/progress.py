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

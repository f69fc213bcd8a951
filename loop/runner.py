"""The long-running loop of ``alloop run``: poll labels, retrain when enough arrived, keep the
annotators' queue filled. Stops cleanly between steps when ``stop`` is set (Ctrl-C)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

from loop.controller import Controller, IterationReport


def describe(rep: IterationReport) -> str:
    parts = [f"iteration {rep.number}"]
    if rep.resumed_from:
        parts.append(f"(resumed at step {rep.resumed_from})")
    if rep.trained:
        m = rep.metrics
        acc = m.get("eval_accuracy", m.get("test_accuracy"))
        where = "eval sample" if "eval_accuracy" in m else "test split"
        parts.append(
            f"trained {rep.model_version} on {rep.n_labels} labels"
            + (f", accuracy {acc:.3f} on the {where}" if acc is not None else "")
        )
    parts.append(f"sent {rep.sent} item(s) for labeling")
    stop = rep.stopping or {}
    if stop.get("stopped"):
        parts.append(
            f"; STOPPED by stop_when ({stop.get('reason')}): no new batch, labels are still "
            "ingested and the model retrained"
        )
    return " ".join(parts)


class LoopRunner:
    """Drives a controller against a live labeling tool.

    Each poll: sync labels; run an iteration when the controller wants to retrain, or when fewer
    than ``refill_below`` sent items still await an answer (so annotators never run dry).
    ``lease()`` is entered around every iteration and says whether this process may run it
    (the database lease that `alloop serve` and `alloop iterate` hold too); when another
    process holds it the poll runs no iteration and the next poll tries again.
    """

    def __init__(
        self,
        ctrl: Controller,
        *,
        poll_seconds: float,
        refill_below: int,
        say: Callable[[str], None] = print,
        lease: Callable[[], AbstractContextManager[bool]] | None = None,
    ) -> None:
        self.lease = lease or _always
        self.ctrl = ctrl
        self.poll_seconds = poll_seconds
        self.refill_below = refill_below
        self.say = say

    def awaiting(self) -> int:
        """Items sent to the labeling tool that have no answer yet."""
        return len(self.ctrl.waiting())

    def _iterate(self, note: str = "") -> IterationReport | None:
        with self.lease() as held:
            if not held:
                self.say("another process holds the iteration lease; trying again at the next poll")
                return None
            rep = self.ctrl.run_iteration()
        self.say(describe(rep) + note)
        return rep

    def poll(self) -> IterationReport | None:
        store = self.ctrl.store
        if store.unfinished_iteration() is not None or not store.iterations():
            return self._iterate()
        res = self.ctrl.sync()
        if res.inserted or res.updated or res.withdrawn:
            self.say(
                f"labels: {res.inserted} new, {res.updated} changed, {res.withdrawn} withdrawn; "
                f"{len(store.training_set())} items in the training set"
            )
        need, why = self.ctrl.needs_training()
        waiting = self.awaiting()
        if need or waiting < self.refill_below:
            if not need and (not store.count_pool() or self.ctrl.stopped()):
                return None
            return self._iterate("" if need else f" (queue refill: {waiting} awaiting)")
        return None

    def run(self, stop: threading.Event, max_polls: int | None = None) -> None:
        polls = 0
        while not stop.is_set():
            t0 = time.monotonic()
            self.poll()
            polls += 1
            if max_polls is not None and polls >= max_polls:
                return
            stop.wait(max(0.0, self.poll_seconds - (time.monotonic() - t0)))


@contextmanager
def _always() -> Iterator[bool]:
    yield True

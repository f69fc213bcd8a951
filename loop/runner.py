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

    With a slow lane (the controller's ``slow_trainer``, from ``slow_model``) every poll also
    starts its training in a background thread when it is due (under ``slow_lease()``, the
    lease `alloop serve`'s slow lane holds), so the polls and the fast model's batches go on
    meanwhile; when its model takes over, the next poll refreshes the waiting tasks with it.
    """

    def __init__(
        self,
        ctrl: Controller,
        *,
        poll_seconds: float,
        refill_below: int,
        say: Callable[[str], None] = print,
        lease: Callable[[], AbstractContextManager[bool]] | None = None,
        slow_lease: Callable[[], AbstractContextManager[bool]] | None = None,
    ) -> None:
        self.lease = lease or _always
        self.slow_lease = slow_lease or _always
        self._slow: threading.Thread | None = None
        self._refresh = threading.Event()  # the slow lane's model took over
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
        rep = self._poll()
        self._after_slow_takeover()
        self._start_slow_lane()
        return rep

    # -- the slow lane ---------------------------------------------------------------------
    @property
    def slow_running(self) -> bool:
        return self._slow is not None and self._slow.is_alive()

    def _start_slow_lane(self) -> None:
        if self.ctrl.slow_trainer is None or self.slow_running:
            return
        due, why = self.ctrl.slow_due()
        if not due:
            return
        self._slow = threading.Thread(
            target=self._train_slow, args=(why,), name="alloop-slow", daemon=True
        )
        self._slow.start()

    def _train_slow(self, why: str) -> None:
        name = getattr(self.ctrl.slow_trainer, "name", "?")
        try:
            with self.slow_lease() as held:
                if not held:
                    self.say("slow lane: another process is training it; trying again later")
                    return
                self.say(f"slow lane: training {name} in the background ({why})")
                mv = self.ctrl.train_slow()
            promo = mv.metrics.get("promotion", {})
            self.say(
                f"slow lane: {mv.id} ({mv.trainer}, {mv.n_labels} labels) {mv.status}"
                + (f" ({promo.get('reason')})" if promo.get("reason") else "")
            )
            if mv.status == "promoted":
                self._refresh.set()
        except Exception as err:  # noqa: BLE001 - the fast lane goes on; retried when due
            self.say(f"slow lane: training {name} failed: {err}")

    def _after_slow_takeover(self) -> None:
        if not self._refresh.is_set():
            return
        with self.lease() as held:
            if not held:
                return  # the next poll tries again
            self._refresh.clear()
            current = self.ctrl.current_model()
            n = self.ctrl.refresh_waiting(current) if current is not None else 0
        if n:
            self.say(f"{n} waiting task(s) now show {current.id}'s predictions")  # type: ignore[union-attr]

    def _poll(self) -> IterationReport | None:
        store = self.ctrl.store
        if store.unfinished_iteration() is None and store.iterations():
            res = self.ctrl.sync()
            if res.inserted or res.updated or res.withdrawn:
                self.say(
                    f"labels: {res.inserted} new, {res.updated} changed, {res.withdrawn} "
                    f"withdrawn; {len(store.training_set())} items in the training set"
                )
        due, why = self.ctrl.iteration_due(self.refill_below)  # the service's rule too
        if not due:
            return None
        return self._iterate(f" ({why})" if why.startswith("queue refill") else "")

    def run(
        self, stop: threading.Event, max_polls: int | None = None, slow_wait_s: float = 600.0
    ) -> None:
        """Poll until ``stop`` (or ``max_polls``); then wait up to ``slow_wait_s`` for a slow
        training in progress, so that its model is recorded (a second Ctrl-C aborts it)."""
        polls = 0
        try:
            while not stop.is_set():
                t0 = time.monotonic()
                self.poll()
                polls += 1
                if max_polls is not None and polls >= max_polls:
                    return
                stop.wait(max(0.0, self.poll_seconds - (time.monotonic() - t0)))
        finally:
            if self.slow_running:
                self.say("waiting for the slow lane's training to finish")
                assert self._slow is not None
                self._slow.join(slow_wait_s)


@contextmanager
def _always() -> Iterator[bool]:
    yield True

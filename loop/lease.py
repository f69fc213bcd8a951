"""The database leases that keep the loop's jobs one at a time across processes: ``iteration``
(an iteration or the nightly job: `alloop serve`'s worker, `alloop run`, `alloop iterate`,
`alloop nightly`) and ``slow-lane`` (the two-speed loop's slow training). One module for all of
them: who a holder is, when a holder is stale, taking a lease, renewing it while a job runs.

A holder id is ``host:pid:pidns:random``; a lease held by a process of this machine (same host
name and PID namespace) that no longer runs is taken over at once instead of waiting for it to
expire. A held lease is renewed every third of its time-to-live by a heartbeat thread, so a
crashed holder elsewhere blocks the others for at most ``ttl`` seconds.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from loop.contracts import Store
from loop.errors import AlloopError

log = logging.getLogger("alloop.lease")

ITERATION = "iteration"  # iterations and the nightly job
SLOW_LANE = "slow-lane"  # one slow-lane training at a time


def _pid_namespace() -> str:
    """The inode of this process's PID namespace ("-" where unknown): two containers can share
    a host name, but a PID means something only inside its own namespace."""
    try:
        return os.readlink("/proc/self/ns/pid").partition("[")[2].rstrip("]") or "-"
    except OSError:
        return "-"


def holder_id() -> str:
    """A lease holder id unique to this process and service: ``host:pid:pidns:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{_pid_namespace()}:{uuid.uuid4().hex[:12]}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def holder_is_stale(holder: str) -> bool:
    """True when ``holder`` names a process of this machine (same host name and PID
    namespace) that no longer runs: its lease can be taken over without waiting for expiry.
    Unknown formats and other machines are never stale."""
    parts = holder.split(":")
    if len(parts) != 4 or not parts[1].isdigit():
        return False
    host, pid, ns, _ = parts
    if host != socket.gethostname() or ns == "-" or ns != _pid_namespace():
        return False
    return int(pid) != os.getpid() and not _alive(int(pid))


def acquire(store: Store, name: str, holder: str, ttl: float) -> bool:
    """Take the lease ``name`` for ``ttl`` seconds: free, expired, or held by a process of this
    machine that no longer runs (taken over at once). False when another live holder has it."""
    if store.acquire_lease(name, holder, ttl):
        return True
    lease = store.lease(name)
    if lease is None:  # expired or released just now
        return store.acquire_lease(name, holder, ttl)
    if holder_is_stale(lease[0]):
        log.warning(
            "the %r lease is held by %s, a process of this machine that no longer runs: "
            "taking it over",
            name,
            lease[0],
        )
        store.release_lease(name, lease[0])
        return store.acquire_lease(name, holder, ttl)
    return False


class Heartbeat:
    """Renews a held lease every third of its time-to-live until :meth:`stop`; ``on_lost`` is
    called when a renewal finds the lease gone (not renewed in time and taken by another)."""

    def __init__(
        self,
        store: Store,
        name: str,
        holder: str,
        ttl: float,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        self._store, self._name, self._holder, self._ttl = store, name, holder, ttl
        self._on_lost = on_lost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alloop-lease", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        every = max(0.2, self._ttl / 3)
        while not self._stop.wait(every):
            try:
                kept = self._store.renew_lease(self._name, self._holder, self._ttl)
            except AlloopError as err:
                log.warning("could not renew the %r lease: %s", self._name, err)
                continue
            if not kept:
                if self._on_lost is not None:
                    self._on_lost()
                log.error(
                    "lost the %r lease (not renewed in time and taken by another process); "
                    "the running step finishes, its writes are idempotent",
                    self._name,
                )

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def release(store: Store, name: str, holder: str) -> None:
    """Give the lease back (it expires by itself when the database cannot be reached)."""
    try:
        store.release_lease(name, holder)
    except AlloopError as err:
        log.warning("could not release the %r lease (it expires by itself): %s", name, err)


@contextmanager
def held(store: Store, name: str, ttl: float, *, holder: str | None = None) -> Iterator[bool]:
    """The lease ``name`` for the block when it can be had (True; renewed by a heartbeat while
    the block runs, released after it), else False and nothing held."""
    holder = holder or holder_id()
    got = acquire(store, name, holder, ttl)
    beat = Heartbeat(store, name, holder, ttl) if got else None
    try:
        yield got
    finally:
        if beat is not None:
            beat.stop()
            release(store, name, holder)

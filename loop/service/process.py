"""The worker as a child process of ``alloop serve`` (``service.worker = "process"``).

The web process only answers HTTP: webhooks store labels, triggers become job requests in the
database; the child (``alloop worker --parent-pid``) polls, trains, selects and pushes, so a
retrain's CPU work never delays a webhook answer in the web process. The child dies with its
parent (Linux parent-death signal, else it notices the parent is gone), and the parent starts
it again when it exits unexpectedly (backing off up to a minute).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence

log = logging.getLogger("alloop.service")

PR_SET_PDEATHSIG = 1
MAX_BACKOFF_S = 60.0
HEALTHY_AFTER_S = 60.0  # a worker that ran this long restarts without backoff


def die_with_parent(parent_pid: int) -> bool:
    """In the child: be killed when the parent ends (Linux ``prctl``). False when the parent
    already ended (the caller exits) or the call is not available (the caller polls)."""
    if os.getppid() != parent_pid:
        return False
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
            return os.getppid() == parent_pid  # the parent may have ended just before
    return os.getppid() == parent_pid


class WorkerProcess:
    """Runs ``argv`` as the worker child, started from a thread that lives as long as it does
    (the parent-death signal follows the thread that started the child), and restarts it
    when it exits while not asked to stop."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str]) -> None:
        self.argv = list(argv)
        self.env = dict(env)
        self.starts = 0
        self.returncode: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._started = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        with self._lock:
            return self._proc.pid if self._proc is not None else None

    @property
    def alive(self) -> bool:
        with self._lock:
            return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 30.0) -> WorkerProcess:
        self._thread = threading.Thread(target=self._run, name="alloop-worker-process", daemon=True)
        self._thread.start()
        self._started.wait(timeout)
        return self

    def _run(self) -> None:
        delay = 1.0
        while not self._stopping.is_set():
            t0 = time.monotonic()
            try:
                proc = subprocess.Popen(self.argv, env=self.env)
            except OSError as err:
                log.error("could not start the worker process (%s): retrying in %.0f s", err, delay)
                self._started.set()
                self._stopping.wait(delay)
                delay = min(MAX_BACKOFF_S, delay * 2)
                continue
            with self._lock:
                self._proc = proc
            self.starts += 1
            self._started.set()
            log.info("worker process %d started", proc.pid)
            rc = proc.wait()
            if self._stopping.is_set():
                self.returncode = rc
                return
            with self._lock:
                self._proc = None
            if time.monotonic() - t0 > HEALTHY_AFTER_S:
                delay = 1.0
            log.error(
                "the worker process %d exited (code %s): starting it again in %.0f s",
                proc.pid,
                rc,
                delay,
            )
            self._stopping.wait(delay)
            delay = min(MAX_BACKOFF_S, delay * 2)

    def stop(self, timeout: float = 100.0) -> int | None:
        """Ask the worker to stop (SIGTERM: a running job finishes first, up to ``timeout``
        seconds, then it is killed; an unfinished iteration resumes on the next start).
        Returns its exit code (None when none ran)."""
        self._stopping.set()
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning(
                    "the worker process %d did not stop within %.0f s: killed", proc.pid, timeout
                )
                proc.kill()
                proc.wait(10)
        if self._thread is not None:
            self._thread.join(15)
        return proc.returncode if proc is not None else None

"""uvicorn serving an application in a background thread: used by ``alloop serve`` (the main
thread keeps the signals) and by tests on loopback."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from loop.errors import ConfigError


class ServiceServer:
    """Serve ``app`` on ``host:port`` (0 = a free port) from a daemon thread.

    The socket is bound in :meth:`start`, so a busy port fails there with a clear error instead
    of inside the thread."""

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        log_level: str = "warning",
        access_log: bool = False,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.log_level = log_level
        self.access_log = access_log
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = 30.0) -> ServiceServer:
        import uvicorn

        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as err:
            sock.close()
            raise ConfigError(
                f"cannot listen on {self.host}:{self.port}: {err.strerror or err}.",
                "set service.port (ALLOOP_SERVICE__PORT) to a free port, or stop the program "
                "using it.",
            ) from None
        sock.listen(2048)
        self.port = sock.getsockname()[1]
        self._sock = sock
        config = uvicorn.Config(
            self.app,
            log_level=self.log_level,
            access_log=self.access_log,
            timeout_graceful_shutdown=10,
            backlog=2048,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="alloop-http", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise ConfigError(
                    f"the HTTP server on {self.host}:{self.port} did not start within {timeout:g} s.",
                    "see the log above for uvicorn's error.",
                )
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 15.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> ServiceServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

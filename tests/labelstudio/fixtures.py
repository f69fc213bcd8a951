"""Fixtures for the Label Studio tests: a real server for the session, from a migrated template.

Environment:
- ``ALLOOP_LS_VENV``: Label Studio's own virtualenv (default ``<repo>/.alloop/labelstudio/venv``),
  installed on first use (~85 s, ~1 GB);
- ``ALLOOP_LS_TEMPLATE``: where migrated templates are cached, one folder per Label Studio
  version (default ``<repo>/.alloop/labelstudio/template``); built once (~20-45 s);
- ``CI=true``: a Label Studio that cannot be installed or started fails the run instead of
  skipping the tests that need it.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from connectors.labelstudio import server as lss
from connectors.labelstudio.tool import LabelStudioTool
from loop.errors import LabelingToolError

REPO = Path(__file__).resolve().parents[2]
TIMINGS: dict[str, float] = {}


def _ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _unavailable(reason: str) -> None:
    if _ci():
        pytest.fail(f"Label Studio is required when CI=true: {reason}")
    pytest.skip(f"Label Studio unavailable: {reason}")


@pytest.fixture(scope="session")
def ls_venv() -> Path:
    venv = Path(os.environ.get("ALLOOP_LS_VENV", REPO / ".alloop" / "labelstudio" / "venv"))
    t0 = time.monotonic()
    try:
        installed = lss.install(venv)
    except LabelingToolError as err:
        _unavailable(f"installing into {venv} failed: {err}")
    if installed:
        TIMINGS["install_s"] = time.monotonic() - t0
    return venv


@pytest.fixture(scope="session")
def ls_template(ls_venv: Path) -> Path:
    root = Path(os.environ.get("ALLOOP_LS_TEMPLATE", REPO / ".alloop" / "labelstudio" / "template"))
    template = root / lss.LS_VERSION
    t0 = time.monotonic()
    ready = lss.template_ready(template)
    try:
        lss.init_template(ls_venv, template)
    except LabelingToolError as err:
        _unavailable(f"building the migrated template failed: {err}")
    if not ready:
        TIMINGS["template_build_s"] = time.monotonic() - t0
    return template


@pytest.fixture(scope="session")
def ls_server(
    ls_venv: Path, ls_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[lss.LocalLabelStudio]:
    root = tmp_path_factory.mktemp("ls-session")
    server = lss.LocalLabelStudio.from_template(
        ls_template, root / "data", ls_venv, lss.free_port(), start_timeout=120
    )
    t0 = time.monotonic()
    try:
        server.start()
    except LabelingToolError as err:
        _unavailable(f"starting from the template failed: {err}")
    TIMINGS["start_from_template_s"] = time.monotonic() - t0
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def make_tool(ls_server: lss.LocalLabelStudio) -> Callable[..., LabelStudioTool]:
    """A tool on a fresh project (unique title) of the session server."""

    def make(classes: tuple[str, ...] = ("pos", "neg"), **kwargs: Any) -> LabelStudioTool:
        title = kwargs.pop("project_title", f"alloop-test-{uuid.uuid4().hex[:10]}")
        return LabelStudioTool(
            ls_server.url, ls_server.token, project_title=title, classes=classes, **kwargs
        )

    return make


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if TIMINGS:
        parts = ", ".join(f"{k}={v:.1f}" for k, v in sorted(TIMINGS.items()))
        terminalreporter.write_line(f"Label Studio timings: {parts}")


# --------------------------------------------------------------------------------------------
# a webhook receiver
# --------------------------------------------------------------------------------------------


@dataclass
class Received:
    headers: dict[str, str]
    payload: dict[str, Any]


class WebhookReceiver:
    """A tiny HTTP server on loopback that records every POSTed JSON body."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                n = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(n) or b"{}")
                with receiver._lock:
                    receiver.received.append(Received(dict(self.headers), body))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/webhook"

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def wait_for(self, n: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.received) >= n:
                    return list(self.received)
            time.sleep(0.05)
        with self._lock:
            return list(self.received)


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


# --------------------------------------------------------------------------------------------
# a server of the test's own
# --------------------------------------------------------------------------------------------


@pytest.fixture
def private_ls_server(
    ls_venv: Path, ls_template: Path, tmp_path: Path
) -> Iterator[lss.LocalLabelStudio]:
    """A started Label Studio of the test's own (own copy of the template, own data dir and
    port), which the test may stop and start again; stopped at the end. The session server is
    not touched."""
    server = lss.LocalLabelStudio.from_template(
        ls_template, tmp_path / "own-ls" / "data", ls_venv, lss.free_port(), start_timeout=120
    )
    try:
        server.start()
    except LabelingToolError as err:
        _unavailable(f"starting a second server from the template failed: {err}")
    try:
        yield server
    finally:
        server.stop()

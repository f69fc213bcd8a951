"""A local Label Studio server that the project installs, starts and stops itself.

Label Studio lives in its own virtualenv (default ``<home>/labelstudio/venv``) so that its exact
pins stay apart from the loop's dependencies. The server runs bound to loopback with a known
admin user and API token, in a clean environment (Label Studio also reads unprefixed variables
such as ``PORT``, ``HOST``, ``USERNAME``), with ``HOME`` pointed inside the data directory so
nothing is written to the real home directory.

Layout of a server directory ``<home>/labelstudio``::

    venv/                 the Label Studio virtualenv (install)
    data/                 LABEL_STUDIO_BASE_DATA_DIR: sqlite database, media, server.log, server.pid
    credentials.json      username, password, token (mode 600), generated once

A migrated template (``init_template``) lets a test session pay the first-start migrations
(~40 s) once; ``LocalLabelStudio.from_template`` copies it (~5 s to a started server).

Command line: ``python -m connectors.labelstudio.server install|init-template|start|stop|status``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from loop.errors import ConfigError, LabelingToolError
from loop.progress import SILENT, LogProgress, Progress

LS_VERSION = "1.23.2"
TORCH_PIN = "torch==2.13.0"
DEFAULT_USERNAME = "admin@alloop.local"  # loop.settings.LabelStudioSettings.username
DEFAULT_PORT = 8080
DEFAULT_HOST = "127.0.0.1"
PID_FILE = "server.pid"
LOG_FILE = "server.log"
TEMPLATE_MARKER = "alloop-template.json"
DB_FILE = "label_studio.sqlite3"

# Environment variables passed through to the server besides the ones set here.
_PASSTHROUGH = ("LANG", "LC_ALL", "TZ", "TMPDIR", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")


# --------------------------------------------------------------------------------------------
# install
# --------------------------------------------------------------------------------------------


def venv_python(venv_dir: Path) -> Path:
    return Path(venv_dir) / "bin" / "python"


def installed_version(venv_dir: Path) -> str | None:
    """The ``label-studio`` version installed in ``venv_dir``, or None when there is none.

    Read from the package metadata: ``label-studio --version`` would load Django and apply
    database migrations under the home directory as a side effect.
    """
    python = venv_python(venv_dir)
    if not python.exists():
        return None
    proc = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.metadata as m; print(m.version('label-studio'))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        return None
    return proc.stdout.strip() or None


def install(
    venv_dir: Path,
    *,
    python: str | None = None,
    constraints: Path | None = None,
    timeout: float = 1800.0,
    progress: Progress = SILENT,
) -> bool:
    """Install Label Studio ``LS_VERSION`` into its own virtualenv ``venv_dir``.

    Idempotent: returns False without doing anything when that version is already there,
    True after installing. pip always gets a constraints file pinning ``torch==2.13.0`` (an
    unpinned torch pulls several GB of CUDA packages), plus ``constraints`` when given.
    ~85 s and ~1 GB on a fresh venv. The pip output goes to ``<venv_dir>/alloop-install.log``.
    """
    venv_dir = Path(venv_dir).absolute()
    if installed_version(venv_dir) == LS_VERSION:
        return False
    with _locked(venv_dir.with_name(f".{venv_dir.name}.lock")):
        if installed_version(venv_dir) == LS_VERSION:  # another process just installed it
            return False
        _install(venv_dir, python or sys.executable, constraints, timeout, progress)
    return True


def _count_collected(log_path: Path) -> int:
    """Packages pip has resolved so far (its "Collecting ..." lines)."""
    try:
        with log_path.open("rb") as fh:
            return sum(1 for line in fh if line.startswith(b"Collecting "))
    except OSError:
        return 0


def _install(
    venv_dir: Path, base: str, constraints: Path | None, timeout: float, progress: Progress
) -> None:
    if not venv_python(venv_dir).exists():
        venv_dir.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            [base, "-m", "venv", str(venv_dir)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if proc.returncode != 0:
            raise LabelingToolError(
                f"Creating the Label Studio virtualenv {venv_dir} with {base} failed: "
                f"{_tail(proc.stderr or proc.stdout)}",
                "check that the Python interpreter has the venv module and the folder is writable",
            )
    log_path = venv_dir / "alloop-install.log"
    with tempfile.TemporaryDirectory() as tmp:
        pins = Path(tmp) / "constraints.txt"
        lines = [TORCH_PIN]
        if constraints is not None:
            lines.append(Path(constraints).read_text())
        pins.write_text("\n".join(lines) + "\n")
        cmd = [
            str(venv_python(venv_dir)),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "-c",
            str(pins),
            f"label-studio=={LS_VERSION}",
        ]
        with (
            log_path.open("w") as log,
            progress.task(f"installing Label Studio {LS_VERSION} (packages)") as advance,
        ):
            pip = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + timeout
            seen = 0
            while pip.poll() is None:
                if time.monotonic() > deadline:
                    pip.kill()
                    pip.wait()
                    raise LabelingToolError(
                        f"Installing label-studio=={LS_VERSION} into {venv_dir} did not finish "
                        f"within {timeout:.0f} s.",
                        f"see {log_path}; check the package index is reachable, then run "
                        "install again",
                    )
                time.sleep(1.0)
                collected = _count_collected(log_path)
                advance(collected - seen)  # also 0: a heartbeat for a log
                seen = collected
    if pip.returncode != 0:
        raise LabelingToolError(
            f"Installing label-studio=={LS_VERSION} into {venv_dir} failed (pip exit "
            f"{pip.returncode}): {_tail(log_path.read_text())}",
            f"see {log_path}; check the package index is reachable, then run install again",
        )
    found = installed_version(venv_dir)
    if found != LS_VERSION:
        raise LabelingToolError(
            f"After installing, {venv_dir} has label-studio {found!r}, expected {LS_VERSION}.",
            f"remove {venv_dir} and run install again",
        )


# --------------------------------------------------------------------------------------------
# credentials, environment
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str
    token: str

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=***, token=***)"


def new_token() -> str:
    """A legacy API token: 40 hex characters."""
    return secrets.token_hex(20)


def load_or_create_credentials(
    path: Path,
    *,
    username: str | None = None,
    password: str | None = None,
    token: str | None = None,
) -> Credentials:
    """Credentials from ``path`` (JSON, mode 600), generating and saving what is missing.

    Values given here win over the file. The file is written only when something was generated.
    """
    path = Path(path)
    stored: dict[str, Any] = {}
    if path.exists():
        try:
            stored = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(
                f"Label Studio credentials file {path} is not readable JSON: {err}.",
                "fix or delete the file (a new password and token are then generated)",
            ) from err
        if not isinstance(stored, dict):
            raise ConfigError(
                f"Label Studio credentials file {path} holds {type(stored).__name__}, expected "
                "an object with username, password and token.",
                "fix or delete the file",
            )
    generated = False
    user = username or stored.get("username")
    if not user:
        user, generated = DEFAULT_USERNAME, True
    pwd = password or stored.get("password")
    if not pwd:
        pwd, generated = secrets.token_urlsafe(18), True
    tok = token or stored.get("token")
    if not tok:
        tok, generated = new_token(), True
    creds = Credentials(username=str(user), password=str(pwd), token=str(tok))
    _check_token(creds.token)
    if generated:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(
                {"username": creds.username, "password": creds.password, "token": creds.token},
                fh,
                indent=2,
            )
        os.chmod(path, 0o600)
    return creds


def _check_token(token: str) -> None:
    if len(token) < 6 or not token.isalnum():
        raise ConfigError(
            f"A Label Studio API token must be at least 6 letters or digits; got {len(token)} "
            "characters.",
            "use 40 hex characters (connectors.labelstudio.server.new_token())",
        )


def server_env(
    venv_dir: Path,
    data_dir: Path,
    credentials: Credentials | None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """A clean environment for the server: nothing inherited but locale/TLS variables.

    Label Studio reads ``LABEL_STUDIO_<X>``, ``HEARTEX_<X>`` and plain ``<X>`` for every setting,
    so an inherited ``PORT``, ``HOST``, ``USERNAME`` or ``PASSWORD`` would change it silently.
    ``HOME`` and the XDG folders point inside ``data_dir``.
    """
    data_dir = Path(data_dir).absolute()
    home = data_dir / "home"
    env = {k: os.environ[k] for k in _PASSTHROUGH if k in os.environ}
    env.setdefault("LANG", "C.UTF-8")
    env.update(
        {
            "PATH": f"{Path(venv_dir).absolute() / 'bin'}{os.pathsep}/usr/local/bin:/usr/bin:/bin",
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_DATA_HOME": str(home / ".local" / "share"),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "PYTHONUNBUFFERED": "1",
            "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "SSRF_PROTECTION_ENABLED": "false",
            "ML_BLOCK_LOCAL_IP": "false",
            "DISABLE_SIGNUP_WITHOUT_LINK": "true",
            "SENTRY_DSN": "",
            "FRONTEND_SENTRY_DSN": "",
            "LATEST_VERSION_CHECK": "false",
            "COLLECT_ANALYTICS": "false",
        }
    )
    if credentials is not None:
        env.update(
            {
                "LABEL_STUDIO_USERNAME": credentials.username,
                "LABEL_STUDIO_PASSWORD": credentials.password,
                "LABEL_STUDIO_USER_TOKEN": credentials.token,
            }
        )
    if extra:
        env.update({str(k): str(v) for k, v in extra.items()})
    return env


# --------------------------------------------------------------------------------------------
# template
# --------------------------------------------------------------------------------------------


def template_ready(template_dir: Path) -> bool:
    marker = Path(template_dir) / TEMPLATE_MARKER
    if not marker.exists():
        return False
    try:
        return json.loads(marker.read_text()).get("label_studio") == LS_VERSION
    except (OSError, json.JSONDecodeError):
        return False


def init_template(venv_dir: Path, template_dir: Path, *, timeout: float = 600.0) -> Path:
    """A migrated, user-less Label Studio data dir at ``template_dir`` (idempotent).

    Runs ``label-studio init -q`` once (all migrations, 34-45 s). The template has no user and
    no organization: the first start of a copy creates the admin with that copy's own token,
    so the token and the legacy-token switch (applied only when the user and organization are
    first created) are the copy's own. Built in a sibling folder and renamed into place, so an
    interrupted build leaves nothing half-made. Returns ``template_dir``.
    """
    template_dir = Path(template_dir).absolute()
    if template_ready(template_dir):
        return template_dir
    template_dir.parent.mkdir(parents=True, exist_ok=True)
    with _locked(template_dir.with_name(f".{template_dir.name}.lock")):
        if not template_ready(template_dir):  # another process may have built it meanwhile
            _build_template(venv_dir, template_dir, timeout)
    return template_dir


def _build_template(venv_dir: Path, template_dir: Path, timeout: float) -> None:
    version = installed_version(venv_dir)
    if version != LS_VERSION:
        raise LabelingToolError(
            f"Building a Label Studio template needs label-studio {LS_VERSION} in {venv_dir}; "
            f"found {version!r}.",
            "run `python -m connectors.labelstudio.server install` first",
        )
    template_dir.parent.mkdir(parents=True, exist_ok=True)
    building = Path(
        tempfile.mkdtemp(prefix=f".{template_dir.name}.build-", dir=template_dir.parent)
    )
    try:
        env = server_env(venv_dir, building, None)
        log_path = building / "init.log"
        with log_path.open("w") as log:
            try:
                proc = subprocess.run(
                    [str(Path(venv_dir).absolute() / "bin" / "label-studio"), "init", "-q"],
                    env=env,
                    cwd=building,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=timeout,
                    check=False,
                )
            except subprocess.TimeoutExpired as err:
                raise LabelingToolError(
                    f"`label-studio init -q` did not finish within {timeout:.0f} s.",
                    "the machine may be overloaded; run init-template again",
                ) from err
        if proc.returncode != 0 or not (building / DB_FILE).exists():
            raise LabelingToolError(
                f"`label-studio init -q` failed (exit {proc.returncode}): "
                f"{_tail(log_path.read_text())}",
                "check the Label Studio install (run install again) and the free disk space",
            )
        # each copy gets its own SECRET_KEY (it signs JWTs): do not ship this one
        (building / ".env").unlink(missing_ok=True)
        shutil.rmtree(building / "home", ignore_errors=True)
        (building / TEMPLATE_MARKER).write_text(
            json.dumps(
                {"label_studio": LS_VERSION, "created_at": datetime.now(UTC).isoformat()},
                indent=2,
            )
        )
        if template_dir.exists():
            shutil.rmtree(template_dir)
        os.replace(building, template_dir)
    finally:
        if building.exists():
            shutil.rmtree(building, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# server
# --------------------------------------------------------------------------------------------


class LocalLabelStudio:
    """A Label Studio server process on loopback, owned by this project.

    ``start()`` is idempotent: a server already running from ``data_dir`` (found through
    ``<data_dir>/server.pid``) is adopted. ``stop()`` works from any process (it reads the pid
    file) and kills the server's whole process group (SIGTERM, then SIGKILL after ``timeout``).
    As a context manager it starts on entry and, on exit, stops the server if it started it
    (an adopted server keeps running).

    Credentials: ``username``/``password``/``token`` given here win; the rest come from
    ``credentials_file`` (default ``<data_dir>/../credentials.json``, mode 600) or are generated
    there once (token: 40 hex characters). Label Studio applies them only when it first creates
    the user, i.e. on the first start of a data dir.
    """

    def __init__(
        self,
        venv_dir: Path,
        data_dir: Path,
        port: int = DEFAULT_PORT,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        *,
        host: str = DEFAULT_HOST,
        credentials_file: Path | None = None,
        extra_env: Mapping[str, str] | None = None,
        start_timeout: float = 240.0,
    ) -> None:
        if not 0 < int(port) < 65536:
            raise ConfigError(
                f"Label Studio port must be in 1..65535, got {port}.", "pick a free local port"
            )
        self.venv_dir = Path(venv_dir).absolute()
        self.data_dir = Path(data_dir).absolute()
        self.port = int(port)
        self.host = host
        self.credentials_file = (
            Path(credentials_file).absolute()
            if credentials_file is not None
            else self.data_dir.parent / "credentials.json"
        )
        self._given = (username, password, token)
        self._credentials: Credentials | None = None
        self.extra_env = dict(extra_env or {})
        self.start_timeout = float(start_timeout)
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None
        self._started_here = False

    # -- construction --------------------------------------------------------------------
    @classmethod
    def from_template(
        cls,
        template_dir: Path,
        data_dir: Path,
        venv_dir: Path,
        port: int = DEFAULT_PORT,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        **kwargs: Any,
    ) -> LocalLabelStudio:
        """A server whose data dir starts as a copy of a migrated template.

        The copy is made only when ``data_dir`` has no database yet; an existing data dir is
        used as it is (so restarting keeps everything).
        """
        template_dir = Path(template_dir)
        if not template_ready(template_dir):
            raise LabelingToolError(
                f"{template_dir} is not a Label Studio {LS_VERSION} template (no "
                f"{TEMPLATE_MARKER} for that version).",
                "build it with connectors.labelstudio.server.init_template(venv, template_dir)",
            )
        data_dir = Path(data_dir)
        if not (data_dir / DB_FILE).exists():
            data_dir.mkdir(parents=True, exist_ok=True)
            shutil.copytree(template_dir, data_dir, dirs_exist_ok=True)
            (data_dir / TEMPLATE_MARKER).unlink(missing_ok=True)
            (data_dir / "init.log").unlink(missing_ok=True)
        return cls(venv_dir, data_dir, port, username, password, token, **kwargs)

    # -- properties ----------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        if self._pid is not None and _alive(self._pid):
            return self._pid
        info = self._read_pid_file()
        if info is not None and _alive(info["pid"]):
            return int(info["pid"])
        return None

    @property
    def credentials(self) -> Credentials:
        if self._credentials is None:
            username, password, token = self._given
            self._credentials = load_or_create_credentials(
                self.credentials_file, username=username, password=password, token=token
            )
        return self._credentials

    @property
    def token(self) -> str:
        return self.credentials.token

    @property
    def username(self) -> str:
        return self.credentials.username

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_FILE

    @property
    def pid_path(self) -> Path:
        return self.data_dir / PID_FILE

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, progress: Progress = SILENT) -> LocalLabelStudio:
        """Start the server (or adopt the one already running from this data dir) and wait
        until ``/health`` is UP and the API token is accepted (``progress``: the wait, which
        is ~40 s on a first start that migrates the database)."""
        creds = self.credentials
        running = self._read_pid_file()
        if running is not None:
            if _alive(running["pid"]):
                if int(running.get("port", -1)) != self.port:
                    raise LabelingToolError(
                        f"Label Studio from {self.data_dir} already runs on port "
                        f"{running.get('port')} (pid {running['pid']}), not on {self.port}.",
                        "use that port, or stop it first (python -m connectors.labelstudio.server stop)",
                    )
                self._pid = int(running["pid"])
                self._wait_healthy(self.start_timeout)
                self._verify_token()
                return self
            self.pid_path.unlink(missing_ok=True)

        if not port_is_free(self.host, self.port):
            raise LabelingToolError(
                f"Port {self.port} on {self.host} is already in use; Label Studio would silently "
                "move to another port.",
                "pick another port (--port / ALLOOP_LS_PORT) or stop what listens there",
            )
        executable = self.venv_dir / "bin" / "label-studio"
        if not executable.exists():
            raise LabelingToolError(
                f"No Label Studio in {self.venv_dir} ({executable} is missing).",
                "run `python -m connectors.labelstudio.server install` (or deploy/labelstudio/install.sh)",
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "home").mkdir(exist_ok=True)
        env = server_env(self.venv_dir, self.data_dir, creds, self.extra_env)
        cmd = [
            str(executable),
            "start",
            "--no-browser",
            "--internal-host",
            self.host,
            "--port",
            str(self.port),
        ]
        with self.log_path.open("ab") as log:
            log.write(f"\n=== alloop: starting Label Studio on {self.url} ===\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                cmd,
                env=env,
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._pid = self._proc.pid
        self._started_here = True
        self._write_pid_file()
        try:
            with progress.task(f"starting Label Studio on {self.url}") as advance:
                self._wait_healthy(self.start_timeout, advance)
            self._verify_token()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the server of this data dir (from any process). Returns False when none ran."""
        pid = self._pid
        if pid is None or not _alive(pid):
            info = self._read_pid_file()
            pid = int(info["pid"]) if info is not None else None
        if pid is None or not _alive(pid):
            self.pid_path.unlink(missing_ok=True)
            self._reap()
            self._pid = None
            return False
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(pid):
            self._reap()
            time.sleep(0.1)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            while _alive(pid) and time.monotonic() < deadline + 10:
                self._reap()
                time.sleep(0.1)
        self._reap()
        self.pid_path.unlink(missing_ok=True)
        self._pid = None
        self._proc = None
        return True

    def is_healthy(self, timeout: float = 2.0, url: str | None = None) -> bool:
        """True when ``GET <url>/health`` answers ``{"status": "UP"}`` (default: this URL)."""
        try:
            with urllib.request.urlopen(f"{url or self.url}/health", timeout=timeout) as resp:
                body = json.loads(resp.read().decode() or "{}")
        except (OSError, ValueError):
            return False
        return isinstance(body, dict) and body.get("status") == "UP"

    def status(self) -> dict[str, Any]:
        """Whether the server of this data dir runs, and its URL (from the pid file when it
        was started on another port than this object's)."""
        pid = self.pid
        info = self._read_pid_file() if pid is not None else None
        url = str(info.get("url", self.url)) if info else self.url
        return {
            "running": pid is not None,
            "pid": pid,
            "url": url,
            "healthy": pid is not None and self.is_healthy(url=url),
            "data_dir": str(self.data_dir),
            "log": str(self.log_path),
            "credentials": str(self.credentials_file),
        }

    def __enter__(self) -> LocalLabelStudio:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._started_here:  # a server adopted from elsewhere keeps running
            self.stop()

    def __repr__(self) -> str:
        return (
            f"LocalLabelStudio(url={self.url!r}, data_dir={str(self.data_dir)!r}, pid={self.pid})"
        )

    # -- internals -----------------------------------------------------------------------
    def _wait_healthy(self, timeout: float, advance: Any = None) -> None:
        """Wait for ``/health`` UP; ``advance(0)`` on every try (a heartbeat for progress)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if advance is not None:
                advance(0)
            if self._proc is not None and self._proc.poll() is not None:
                raise LabelingToolError(
                    f"Label Studio exited with code {self._proc.returncode} before answering on "
                    f"{self.url}: {_tail(_read_text(self.log_path))}",
                    f"see {self.log_path}",
                )
            if self._pid is not None and not _alive(self._pid):
                raise LabelingToolError(
                    f"Label Studio (pid {self._pid}) is gone before answering on {self.url}: "
                    f"{_tail(_read_text(self.log_path))}",
                    f"see {self.log_path}",
                )
            if self.is_healthy():
                return
            time.sleep(0.3)
        raise LabelingToolError(
            f"Label Studio did not report /health UP on {self.url} within {timeout:.0f} s: "
            f"{_tail(_read_text(self.log_path))}",
            f"see {self.log_path}; a first start runs migrations (~45 s): raise start_timeout "
            "or start from a migrated template",
        )

    def _verify_token(self) -> None:
        req = urllib.request.Request(
            f"{self.url}/api/current-user/whoami",
            headers={"Authorization": f"Token {self.token}"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                who = json.loads(resp.read().decode() or "{}")
        except urllib.error.HTTPError as err:
            raise LabelingToolError(
                f"Label Studio on {self.url} refused the API token of {self.credentials_file} "
                f"(HTTP {err.code} on /api/current-user/whoami).",
                "the token is applied only when the user is first created: use the token this "
                "data dir was created with, or start from a fresh data dir",
            ) from err
        except (OSError, ValueError) as err:
            raise LabelingToolError(
                f"Checking the API token on {self.url} failed: {err}.", f"see {self.log_path}"
            ) from err
        if not isinstance(who, dict) or "id" not in who:
            raise LabelingToolError(
                f"Label Studio on {self.url} answered /api/current-user/whoami with {who!r}, "
                "expected a user.",
                f"see {self.log_path}",
            )

    def _read_pid_file(self) -> dict[str, Any] | None:
        try:
            info = json.loads(self.pid_path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        if not isinstance(info, dict) or not isinstance(info.get("pid"), int):
            return None
        if not _is_label_studio(info["pid"]):
            return None
        return info

    def _write_pid_file(self) -> None:
        info = {
            "pid": self._pid,
            "port": self.port,
            "host": self.host,
            "url": self.url,
            "venv": str(self.venv_dir),
            "started_at": datetime.now(UTC).isoformat(),
        }
        tmp = self.pid_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(info, indent=2))
        os.replace(tmp, self.pid_path)

    def _reap(self) -> None:
        if self._proc is not None:
            self._proc.poll()
            return
        pid = self._pid
        if pid is not None:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (created if missing) for the block."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def port_is_free(host: str, port: int) -> bool:
    """True when nothing listens on ``host:port`` (nor on localhost:port, which Label Studio
    checks) and the port can be bound."""
    for target in {host, "127.0.0.1"}:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            if s.connect_ex((target, port)) == 0:
                return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # as the server will (Django's runserver): connections of a previous run that linger
        # in TIME_WAIT do not make the port busy, a listener does
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = DEFAULT_HOST) -> int:
    """A port the OS says is free now (for tests and ad-hoc servers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _alive(pid: int) -> bool:
    """True when ``pid`` runs and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        try:
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        return state not in ("Z", "X")
    return True


def _is_label_studio(pid: int) -> bool:
    """Guards against a recycled pid: the process must be a label-studio command."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.parent.exists():
        return _alive(pid)
    try:
        return b"label-studio" in cmdline.read_bytes()
    except OSError:
        return False


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _tail(text: str, n: int = 800) -> str:
    text = (text or "").strip()
    return text if len(text) <= n else "..." + text[-n:]


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    home = Path(os.environ.get("ALLOOP_HOME", ".alloop"))
    ls_home = home / "labelstudio"
    p = argparse.ArgumentParser(
        prog="python -m connectors.labelstudio.server",
        description="Install, start and stop the project's local Label Studio.",
    )
    p.add_argument("command", choices=["install", "init-template", "start", "stop", "status"])
    p.add_argument(
        "--venv", type=Path, default=Path(os.environ.get("ALLOOP_LS_VENV", ls_home / "venv"))
    )
    p.add_argument(
        "--data-dir", type=Path, default=Path(os.environ.get("ALLOOP_LS_DATA", ls_home / "data"))
    )
    p.add_argument(
        "--template",
        type=Path,
        default=Path(os.environ["ALLOOP_LS_TEMPLATE"])
        if os.environ.get("ALLOOP_LS_TEMPLATE")
        else None,
        help="migrated template dir: init-template builds it, start copies it into a new data dir",
    )
    p.add_argument("--port", type=int, default=int(os.environ.get("ALLOOP_LS_PORT", DEFAULT_PORT)))
    p.add_argument("--host", default=os.environ.get("ALLOOP_LS_HOST", DEFAULT_HOST))
    p.add_argument("--username", default=os.environ.get("ALLOOP_LS_USERNAME"))
    p.add_argument(
        "--credentials", type=Path, default=None, help="default: <data-dir>/../credentials.json"
    )
    p.add_argument("--timeout", type=float, default=240.0, help="seconds to wait for /health")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "install":
            t0 = time.monotonic()
            did = install(args.venv, progress=LogProgress(print))
            took = time.monotonic() - t0
            print(
                f"Label Studio {LS_VERSION} installed in {args.venv} ({took:.0f} s)."
                if did
                else f"Label Studio {LS_VERSION} is already installed in {args.venv}."
            )
            return 0
        if args.command == "init-template":
            template = args.template or args.venv.parent / "template" / LS_VERSION
            t0 = time.monotonic()
            init_template(args.venv, template)
            print(f"Migrated template ready in {template} ({time.monotonic() - t0:.0f} s).")
            return 0
        kwargs: dict[str, Any] = {
            "host": args.host,
            "credentials_file": args.credentials,
            "start_timeout": args.timeout,
        }
        if args.command == "start" and args.template is not None and template_ready(args.template):
            server = LocalLabelStudio.from_template(
                args.template, args.data_dir, args.venv, args.port, args.username, **kwargs
            )
        else:
            server = LocalLabelStudio(args.venv, args.data_dir, args.port, args.username, **kwargs)
        if args.command == "start":
            t0 = time.monotonic()
            server.start(progress=LogProgress(print))
            print(
                f"Label Studio {LS_VERSION} is up at {server.url} (pid {server.pid}, {time.monotonic() - t0:.0f} s)"
            )
            print(f"  username:   {server.username}")
            print(f"  password and API token: {server.credentials_file}")
            print(f"  log:        {server.log_path}")
            return 0
        if args.command == "stop":
            url = server.status()["url"]
            print(
                f"Label Studio at {url} stopped."
                if server.stop()
                else f"No Label Studio running from {server.data_dir}."
            )
            return 0
        st = server.status()
        print(json.dumps(st, indent=2))
        return 0 if st["healthy"] else 3
    except (LabelingToolError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""Screenshots of a page with the system's headless Chromium (Debian's ``chromium`` package:
nothing downloads a browser build). Used by ``alloop report --screenshot`` and ``alloop
screenshot``; the browser tests drive the same binary with Playwright."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from loop.errors import ConfigError

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
#: flags for a headless run on a closed network, as root in a container: no sandbox (it needs
#: user namespaces), no GPU, and none of the background connections Chromium makes at start
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
    "--hide-scrollbars",
)


def find_chromium() -> str:
    """The Chromium binary: ``ALLOOP_CHROMIUM`` when set, else the first on PATH."""
    env = os.environ.get("ALLOOP_CHROMIUM")
    if env:
        if not Path(env).is_file():
            raise ConfigError(
                f"ALLOOP_CHROMIUM is {env!r}, which is not a file.",
                "point it at the chromium binary, or unset it to search PATH.",
            )
        return env
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    raise ConfigError(
        "no Chromium found (looked for " + ", ".join(CANDIDATES) + " on PATH).",
        "install Debian's chromium (`apt-get install chromium`; deploy/setup.sh does it when run "
        "as root) or set ALLOOP_CHROMIUM.",
    )


def screenshot(
    target: str | Path, out: Path, *, width: int = 1280, height: int = 1600, timeout: float = 60
) -> Path:
    """A PNG of ``target`` (a URL, or an HTML file) at ``width`` × ``height`` CSS pixels."""
    if width < 200 or height < 200:
        raise ConfigError(
            f"expected a window of at least 200 x 200 pixels, found {width} x {height}.",
            "pass e.g. --width 1280 --height 1600.",
        )
    url = str(target)
    if not url.startswith(("http://", "https://", "file://")):
        path = Path(target).resolve()
        if not path.is_file():
            raise ConfigError(
                f"no such file to take a screenshot of: {path}", "pass an HTML file or a URL."
            )
        url = path.as_uri()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    with tempfile.TemporaryDirectory(prefix="alloop-chromium-") as profile:
        cmd = [
            find_chromium(),
            *FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={int(width)},{int(height)}",
            f"--screenshot={tmp}",
            "--virtual-time-budget=3000",
            url,
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0 or not tmp.is_file() or tmp.stat().st_size == 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        tmp.unlink(missing_ok=True)
        raise ConfigError(
            f"Chromium could not take the screenshot of {url} (exit {done.returncode}): "
            + " | ".join(tail),
            "check that the page answers and that chromium starts (`chromium --version`).",
        )
    os.replace(tmp, out)
    return out

"""Console output that reads in an 80-column terminal and in a log: the serve banner keeps
every address and path whole on its own line, and long steps report progress as lines."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

from loop.cli import _serve_banner
from loop.progress import LogProgress
from loop.settings import Settings


def test_serve_banner_one_value_per_line_and_whole_addresses(tmp_path: Path) -> None:
    s = Settings(home=tmp_path / "a-rather-long-home-directory-name" / ".alloop")
    creds = s.home / "labelstudio" / "credentials.json"
    service = SimpleNamespace(
        tool=SimpleNamespace(project_id=12),
        secrets=SimpleNamespace(source=str(s.home / "service.json")),
        ml_backend=3,
        webhook_url="http://127.0.0.1:8765/webhooks/label-studio",
        ml_url="http://127.0.0.1:8765/ml",
    )
    handle = SimpleNamespace(url="http://127.0.0.1:8080", credentials_file=creds, server=object())
    lines = _serve_banner(s, service, "http://127.0.0.1:8765", handle)
    text = "\n".join(lines)
    for whole in (
        "http://127.0.0.1:8080/projects/12/data",
        "http://127.0.0.1:8765/docs",
        str(creds),
        "http://127.0.0.1:8765/webhooks/label-studio",
        "ALLOOP_SERVICE__PORT",
        "ALLOOP_LABEL_STUDIO__PORT",
        "Ctrl-C",
    ):
        assert sum(whole in line for line in lines) == 1, whole
    # labels stay short; only a value (an address or a path) may make a line long
    for line in lines:
        value = re.split(r"\s{2,}", line.strip(), maxsplit=1)[-1]
        assert len(line) <= 80 or len(line) - len(value) <= 17, line
    assert "basic auth" in text and "admin@alloop.local" in text


def test_log_progress_lines(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import time as time_mod

    clock = iter([0.0, 5.0, 11.0, 12.0, 25.0, 28.0, 30.0])
    monkeypatch.setattr(time_mod, "monotonic", lambda: next(clock, 30.0))
    said: list[str] = []
    prog = LogProgress(said.append, every=10.0, quiet_below=3.0)
    with prog.task("embedding", total=100) as advance:
        for n in (10, 30, 20, 40, 0):
            advance(n)
    assert said == [
        "embedding ... (100 to do)",
        "embedding: 40/100, 11 s",
        "embedding: 100/100, 25 s",
        "embedding: done in 30 s",
    ]

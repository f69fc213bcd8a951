"""The local Label Studio server: start from a template, pid file, stop, restart, failures."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.labelstudio import server as lss
from connectors.labelstudio.tool import LabelStudioTool
from loop.errors import LabelingToolError
from tests.labelstudio.fixtures import REPO, TIMINGS
from tests.labelstudio.ls_helpers import annotate, requests_for, tasks_of

pytestmark = pytest.mark.labelstudio


@pytest.fixture
def spare(ls_venv: Path, ls_template: Path, tmp_path: Path) -> Iterator[lss.LocalLabelStudio]:
    """A second server (not started) from a fresh copy of the template."""
    server = lss.LocalLabelStudio.from_template(
        ls_template, tmp_path / "ls" / "data", ls_venv, lss.free_port(), start_timeout=120
    )
    try:
        yield server
    finally:
        server.stop()


def test_template_copy_accepts_its_own_token(spare: lss.LocalLabelStudio) -> None:
    creds_file = spare.data_dir.parent / "credentials.json"
    t0 = time.monotonic()
    spare.start()  # start() verifies the token with /api/current-user/whoami
    TIMINGS.setdefault("start_from_template_s", time.monotonic() - t0)
    creds = json.loads(creds_file.read_text())
    assert creds_file.stat().st_mode & 0o777 == 0o600
    assert len(creds["token"]) == 40 and int(creds["token"], 16) >= 0
    assert spare.is_healthy()
    # the copy has its own SECRET_KEY and its own home inside the data dir
    assert (spare.data_dir / ".env").exists()
    assert (spare.data_dir / "home").is_dir()
    assert (spare.data_dir / "server.log").read_text().count("alloop: starting") == 1


def test_start_is_idempotent_and_stop_works_from_another_process(
    spare: lss.LocalLabelStudio,
) -> None:
    spare.start()
    pid = spare.pid
    assert pid is not None and (spare.data_dir / "server.pid").exists()
    again = lss.LocalLabelStudio(spare.venv_dir, spare.data_dir, spare.port).start()
    assert again.pid == pid  # adopted, not a second server
    status = subprocess.run(
        [
            sys.executable,
            "-m",
            "connectors.labelstudio.server",
            "status",
            "--venv",
            str(spare.venv_dir),
            "--data-dir",
            str(spare.data_dir),
            "--port",
            str(spare.port),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["pid"] == pid
    stop = subprocess.run(
        [
            sys.executable,
            "-m",
            "connectors.labelstudio.server",
            "stop",
            "--venv",
            str(spare.venv_dir),
            "--data-dir",
            str(spare.data_dir),
            "--port",
            str(spare.port),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert stop.returncode == 0, stop.stderr
    assert "stopped" in stop.stdout
    deadline = time.monotonic() + 10
    while spare.pid is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert spare.pid is None
    assert not (spare.data_dir / "server.pid").exists()
    assert not spare.is_healthy()
    assert spare.stop() is False  # nothing left to stop


def test_busy_port_is_refused_before_starting(spare: lss.LocalLabelStudio) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", spare.port))
        s.listen()
        with pytest.raises(LabelingToolError, match=f"Port {spare.port} .* already in use"):
            spare.start()
    assert spare.pid is None
    assert not (spare.data_dir / "server.pid").exists()


def test_a_token_the_data_dir_was_not_created_with_is_refused(spare: lss.LocalLabelStudio) -> None:
    spare.start()
    other = lss.LocalLabelStudio(spare.venv_dir, spare.data_dir, spare.port, token="f" * 40)
    with pytest.raises(LabelingToolError, match="refused the API token") as err:
        other.start()
    assert "f" * 40 not in str(err.value)
    assert spare.is_healthy()  # the running server was adopted, not stopped


def test_server_stopped_midway_then_restarted_loses_nothing(spare: lss.LocalLabelStudio) -> None:
    spare.start()
    tool = LabelStudioTool(
        spare.url, spare.token, project_title="restart", classes=("pos", "neg"), max_retries=0
    )
    tool.send(requests_for(["s1", "s2", "s3"]))
    annotate(tool, "s1", "pos")
    spare.stop()

    with pytest.raises(LabelingToolError) as err:
        tool.send(requests_for(["s3", "s4"]))
    msg = str(err.value)
    assert spare.url in msg and "running" in msg and spare.token not in msg
    with pytest.raises(LabelingToolError):
        tool.fetch_labels(None)

    restarted = lss.LocalLabelStudio(spare.venv_dir, spare.data_dir, spare.port).start()
    try:
        result = tool.push(requests_for(["s3", "s4"]))
        assert (result.imported, result.already_present) == (1, 1)
        assert Counter(t["data"]["alloop_id"] for t in tasks_of(tool)) == Counter(
            ["s1", "s2", "s3", "s4"]
        )
        labels = tool.fetch_labels(None).labels
        assert [(x.item_id, x.value) for x in labels] == [("s1", "pos")]
    finally:
        restarted.stop()


def test_real_home_is_left_alone(spare: lss.LocalLabelStudio) -> None:
    real = [
        Path.home() / ".local" / "share" / "label-studio",
        Path.home() / ".config" / "label-studio",
    ]
    before = [p.exists() for p in real]
    spare.start()
    spare.stop()
    assert [p.exists() for p in real] == before

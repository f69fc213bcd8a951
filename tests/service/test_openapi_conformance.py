"""The service's OpenAPI document says what it does: schemathesis (a property-based API
tester, run as its own command line) fuzzes every operation of a live service on loopback
(uvicorn, the real app and worker, a real SQLite store; Label Studio in memory) with a fixed
seed and a bounded number of examples, with every check on; any finding fails the test."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from loop.service.app import create_app
from loop.service.server import ServiceServer
from tests.service.conftest import Env

SCHEMATHESIS = shutil.which("schemathesis") or str(Path(sys.executable).with_name("schemathesis"))
EXAMPLES = int(os.environ.get("ALLOOP_SCHEMATHESIS_EXAMPLES", "30"))


def _config(env: Env) -> str:
    s = env.service.secrets
    return f"""
[auth.openapi.apiToken]
bearer = "{s.api_token}"

[auth.openapi.webhookSecret]
api_key = "{s.webhook_secret}"

[auth.openapi.mlBasic]
username = "{s.ml_user}"
password = "{s.ml_password}"
"""


def test_schemathesis_finds_nothing(make_env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    if not Path(SCHEMATHESIS).exists():
        pytest.fail(
            "schemathesis is not installed: it is a test dependency (pip install -e .[test])"
        )
    env: Env = make_env(start=True)
    env.idle()
    config = tmp_path / "schemathesis.toml"
    config.write_text(_config(env))
    with ServiceServer(create_app(env.service)) as server:
        proc = subprocess.run(
            [
                SCHEMATHESIS,
                "--config-file",
                str(config),
                "run",
                f"{server.url}/openapi.json",
                "--checks",
                "all",
                "--max-examples",
                str(EXAMPLES),
                "--seed",
                "20261206",
                "--phases",
                "examples,coverage,fuzzing",
                "--no-color",
                "--request-timeout",
                "30",
            ],
            capture_output=True,
            text=True,
            timeout=900,
            cwd=tmp_path,
        )
    report = proc.stdout[-12000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, report
    assert (
        "No issues found" in proc.stdout or " 0 failures" in proc.stdout or "passed" in proc.stdout
    ), report

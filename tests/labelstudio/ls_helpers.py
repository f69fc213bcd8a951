"""Small helpers for the Label Studio tests (requests, annotations made through the SDK)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from connectors.labelstudio.tool import LabelStudioTool
from loop.records import Item, LabelRequest


def requests_for(
    ids: Sequence[str],
    scores: Sequence[float] | None = None,
    *,
    prediction: str | None = "pos",
    model_version: str | None = "v1",
    kind: str = "query",
) -> list[LabelRequest]:
    scores = scores if scores is not None else [float(i) for i in range(len(ids))]
    return [
        LabelRequest(
            item=Item(id=i, text=f"text of {i}"),
            kind=kind,
            score=s,
            prediction=prediction,
            confidence=0.5 if prediction else None,
            model_version=model_version,
        )
        for i, s in zip(ids, scores, strict=True)
    ]


def choice(value: str, name: str = "label") -> list[dict[str, Any]]:
    return [
        {"from_name": name, "to_name": "text", "type": "choices", "value": {"choices": [value]}}
    ]


def tasks_of(tool: LabelStudioTool, **query: Any) -> list[dict[str, Any]]:
    """Every task of the tool's project (raw SDK listing, one big page), as dicts."""
    pid = tool.ensure_project()
    pager = tool.client.tasks.list(
        project=pid,
        fields="all",
        page=1,
        page_size=10_000,
        query=json.dumps(query) if query else None,
    )
    return [t.model_dump(mode="json") for t in pager.items or []]


def task_id(tool: LabelStudioTool, item_id: str) -> int:
    found = [t["id"] for t in tasks_of(tool) if t["data"].get("alloop_id") == item_id]
    assert len(found) == 1, f"expected one task for {item_id}, found {found}"
    return int(found[0])


def annotate(
    tool: LabelStudioTool, item_id: str, value: str | None, *, cancelled: bool = False
) -> int:
    """Create an annotation (or a skip when ``cancelled``) through the SDK; returns its id."""
    result = [] if value is None else choice(value)
    ann = tool.client.annotations.create(
        id=task_id(tool, item_id), result=result, was_cancelled=cancelled
    )
    return int(ann.id)


ROOT = Path(__file__).resolve().parents[2]


def alloop_env(home: Path, cache_dir: Path, url: str, token: str, title: str, **extra: str) -> dict:
    """The environment of an `alloop` command against the test session's Label Studio."""
    return {
        **os.environ,
        "ALLOOP_HOME": str(home),
        "ALLOOP_CACHE_DIR": str(cache_dir),
        "ALLOOP_LABEL_STUDIO__URL": url,
        "ALLOOP_LABEL_STUDIO__TOKEN": token,
        "ALLOOP_LABEL_STUDIO__PROJECT_TITLE": title,
        "COLUMNS": "200",
        **extra,
    }


def alloop_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run `alloop ARGS` as a user does (a subprocess in the repository root)."""
    return subprocess.run(
        [sys.executable, "-m", "loop.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )

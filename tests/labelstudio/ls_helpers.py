"""Small helpers for the Label Studio tests (requests, annotations made through the SDK)."""

from __future__ import annotations

import json
from collections.abc import Sequence
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

"""Label Studio 1.23.2 webhook payloads in their real shape: the captured payloads of
tests/labelstudio/data/ with ids, item and answer replaced."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

CAPTURED = (
    Path(__file__).resolve().parents[1] / "labelstudio" / "data" / "webhook_payloads_1.23.2.json"
)


@cache
def _captured() -> tuple[dict[str, Any], ...]:
    return tuple(json.loads(CAPTURED.read_text(encoding="utf-8")))


def _template(action: str) -> dict[str, Any]:
    for p in _captured():
        if p["action"] == action:
            return copy.deepcopy(p)
    raise KeyError(action)


def annotation_event(
    *,
    project_id: int,
    task_id: int,
    item_id: str,
    annotation_id: int,
    value: str | None,
    action: str = "ANNOTATION_CREATED",
    text: str = "some text",
    completed_by: int = 1,
) -> dict[str, Any]:
    """An ANNOTATION_CREATED / ANNOTATION_UPDATED payload; ``value=None`` is a skip."""
    p = _template(action)
    ann = p["annotation"]
    ann["id"] = annotation_id
    ann["task"] = task_id
    ann["project"] = project_id
    ann["completed_by"] = completed_by
    ann["was_cancelled"] = value is None
    ann["result"] = (
        []
        if value is None
        else [
            {
                "from_name": "label",
                "to_name": "text",
                "type": "choices",
                "value": {"choices": [value]},
            }
        ]
    )
    p["task"]["id"] = task_id
    p["task"]["project"] = project_id
    p["task"]["data"] = {"text": text, "alloop_id": item_id, "alloop_kind": "query"}
    p["project"]["id"] = project_id
    return p


def deleted_event(*, project_id: int, annotation_ids: list[int]) -> dict[str, Any]:
    p = _template("ANNOTATIONS_DELETED")
    p["annotations"] = [{"id": a} for a in annotation_ids]
    p["project"]["id"] = project_id
    return p

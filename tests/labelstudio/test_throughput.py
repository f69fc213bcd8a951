"""send() of 1,000 tasks with predictions vs a raw SDK import of the same tasks (same server,
same run). Prints both; fails if the tool's bookkeeping (lookups, duplicate check, model
version) costs more than the import itself plus a few seconds."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import pytest

from connectors.labelstudio.tool import LabelStudioTool
from tests.labelstudio.ls_helpers import requests_for, tasks_of

pytestmark = [pytest.mark.labelstudio, pytest.mark.slow]

N = 1000


def test_send_throughput_vs_raw_import(make_tool: Callable[..., LabelStudioTool]) -> None:
    ids = [f"t{i:05d}" for i in range(N)]
    reqs = requests_for(ids, [((i * 7919) % N) / N for i in range(N)], model_version="bench-1")

    raw_tool = make_tool()
    pid = raw_tool.ensure_project()
    tasks = [raw_tool._task(r, 0.5) for r in reqs]  # the exact payload send() builds
    t0 = time.perf_counter()
    resp = raw_tool.client.projects.import_tasks(id=pid, request=tasks, return_task_ids=True)
    raw_s = time.perf_counter() - t0
    assert len(resp.task_ids or []) == N

    tool = make_tool()
    tool.ensure_project()
    t0 = time.perf_counter()
    result = tool.push(reqs)
    send_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    again = tool.push(reqs)
    resend_s = time.perf_counter() - t0

    print(
        f"\n{N} tasks with predictions: raw import_tasks {raw_s:.2f} s ({N / raw_s:.0f}/s); "
        f"send() {send_s:.2f} s ({N / send_s:.0f}/s); send() again (all present) {resend_s:.2f} s"
    )
    assert (result.imported, again.imported, again.already_present) == (N, 0, N)
    assert Counter(t["data"]["alloop_id"] for t in tasks_of(tool)) == Counter(ids)
    assert send_s < 2 * raw_s + 5.0

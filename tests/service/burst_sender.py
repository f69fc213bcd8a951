"""Posts webhook payloads at the service from a process of its own, as Label Studio would
(one POST per event, several at once), and measures every answer.

    python -m tests.service.burst_sender URL PAYLOADS.json RESULT.json [--workers N]

The secret comes from the environment (``ALLOOP_TEST_WEBHOOK_SECRET``), not the command line.
Writes ``{"statuses": [...], "seconds": [...], "wall_seconds": ...}`` in payload order.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

HEADER = "X-Alloop-Secret"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("payloads", type=Path)
    ap.add_argument("result", type=Path)
    ap.add_argument("--workers", type=int, default=8)
    args = ap.parse_args()
    secret = os.environ["ALLOOP_TEST_WEBHOOK_SECRET"]
    bodies = [json.dumps(p).encode() for p in json.loads(args.payloads.read_text())]
    local = threading.local()

    def post(body: bytes) -> tuple[int, float]:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(timeout=10.0)
        t0 = time.perf_counter()
        try:
            r = client.post(
                args.url, content=body, headers={HEADER: secret, "Content-Type": "application/json"}
            )
            status = r.status_code
        except httpx.HTTPError:
            status = -1
        return status, time.perf_counter() - t0

    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.workers) as pool:
        out = list(pool.map(post, bodies))
    wall = time.perf_counter() - t0
    args.result.write_text(
        json.dumps(
            {
                "statuses": [s for s, _ in out],
                "seconds": [t for _, t in out],
                "wall_seconds": wall,
            }
        )
    )


if __name__ == "__main__":
    main()

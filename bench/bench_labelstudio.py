"""Label Studio throughput and one full loop iteration, measured in one run.

    python bench/bench_labelstudio.py [--n 1000] [--repeats 3] [--json OUT] [--no-loop]

Starts its own Label Studio from the migrated template (``$ALLOOP_LS_VENV``, default
``.alloop/labelstudio/venv``; ``$ALLOOP_LS_TEMPLATE``, default ``.alloop/labelstudio/template``;
both installed or built when missing) in a temporary data dir, and stops it at the end.

1. Push throughput. In each of ``--repeats`` rounds, one right after the other (the order
   alternates between rounds), each into a fresh project of the same server:
   - ``push``: ``LabelStudioTool.push`` of ``--n`` requests with predictions (idempotence
     look-up, import, model version);
   - ``raw``: ``projects.import_tasks(id, request=tasks, return_task_ids=True)`` of the same
     task payloads (built before the clock starts) through a plain SDK client.
   Creating the projects is not timed (a 0.5 s pause follows it). Reports tasks/s (best of the
   rounds) and the ratio push ÷ raw of the best rounds, of each round and their median; also
   the time of a second push of the same requests (every item already present: look-up only).
2. One loop iteration on the built-in Rotten Tomatoes dataset (``$ALLOOP_CACHE_DIR``, default
   ``.alloop/cache``): SqlStore on a temporary SQLite file, the train split as the pool, the test
   split's gold labels as ``Label(source="import")``, the ``embed-lr`` trainer (embeddings cached
   under ``<cache>/embeddings``), ``Controller(batch_size=20, cold_start="random")``. Every
   dataset text is embedded into the cache first (reported: how many were missing), then the
   cold-start iteration runs, ``AnnotatorBot`` answers its 20 tasks, and the next iteration is
   timed: sync -> train -> evaluate on the test split -> score the pool -> push 20, with the
   controller's own per-step timings and the model's ``train_seconds`` / ``eval_seconds``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SETTLE_S = 0.5  # pause before each timed import, after the untimed project set-up
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value) if value else default


def start_server(root: Path) -> Any:
    """A started Label Studio of this run's own, from the (installed, migrated) template."""
    from connectors.labelstudio import server as lss

    venv = _env_path("ALLOOP_LS_VENV", REPO / ".alloop" / "labelstudio" / "venv")
    template = (
        _env_path("ALLOOP_LS_TEMPLATE", REPO / ".alloop" / "labelstudio" / "template")
        / lss.LS_VERSION
    )
    lss.install(venv)
    lss.init_template(venv, template)
    server = lss.LocalLabelStudio.from_template(
        template, root / "data", venv, lss.free_port(), start_timeout=180
    )
    t0 = time.perf_counter()
    server.start()
    print(f"Label Studio {lss.LS_VERSION} at {server.url} ({time.perf_counter() - t0:.1f} s)")
    return server


# --------------------------------------------------------------------------------------------
# 1. push vs raw import
# --------------------------------------------------------------------------------------------


def _requests(n: int) -> list[Any]:
    from loop.records import Item, LabelRequest

    return [
        LabelRequest(
            item=Item(id=f"b{i:06d}", text=f"benchmark text number {i}, a short review"),
            kind="query",
            score=((i * 7919) % n) / n,
            prediction="pos" if i % 3 else "neg",
            confidence=0.6,
            model_version="bench-1",
        )
        for i in range(n)
    ]


def _count_tasks(client: Any, pid: int) -> int:
    pager = client.tasks.list(project=pid, fields="task_only", page=1, page_size=1)
    return int(pager.response.total)


def bench_push(server: Any, n: int, repeats: int) -> dict[str, Any]:
    from label_studio_sdk import LabelStudio

    from connectors.labelstudio.tool import LabelStudioTool, label_config, queue_scores

    classes = ("pos", "neg")
    reqs = _requests(n)
    scores = queue_scores([r.score for r in reqs])

    def title() -> str:
        return f"bench-{uuid.uuid4().hex[:10]}"

    def ours() -> tuple[float, LabelStudioTool]:
        tool = LabelStudioTool(server.url, server.token, project_title=title(), classes=classes)
        pid = tool.ensure_project()
        time.sleep(SETTLE_S)
        t0 = time.perf_counter()
        result = tool.push(reqs)
        seconds = time.perf_counter() - t0
        if result.imported != n or _count_tasks(tool.client, pid) != n:
            raise RuntimeError(f"push imported {result.imported} of {n} tasks")
        return seconds, tool

    def raw() -> float:
        client = LabelStudio(base_url=server.url, api_key=server.token, timeout=120)
        project = client.projects.create(  # as LabelStudioTool.ensure_project creates it
            title=title(), label_config=label_config(classes), sampling="Uncertainty sampling"
        )
        shaper = LabelStudioTool(server.url, server.token, project_title="x", classes=classes)
        tasks = [shaper._task(r, s) for r, s in zip(reqs, scores, strict=True)]  # push's payload
        time.sleep(SETTLE_S)
        t0 = time.perf_counter()
        resp = client.projects.import_tasks(id=project.id, request=tasks, return_task_ids=True)
        seconds = time.perf_counter() - t0
        if len(resp.task_ids or []) != n:
            raise RuntimeError(f"raw import created {len(resp.task_ids or [])} of {n} tasks")
        return seconds

    push_s: list[float] = []
    raw_s: list[float] = []
    last: Any = None
    for r in range(repeats):
        order = ("push", "raw") if r % 2 == 0 else ("raw", "push")
        for which in order:
            if which == "push":
                seconds, last = ours()
                push_s.append(seconds)
            else:
                raw_s.append(raw())
        print(
            f"round {r + 1} ({' then '.join(order)}): push {push_s[-1]:.3f} s "
            f"({n / push_s[-1]:.0f}/s), raw {raw_s[-1]:.3f} s ({n / raw_s[-1]:.0f}/s), "
            f"ratio {raw_s[-1] / push_s[-1]:.2f}"
        )
    time.sleep(SETTLE_S)
    t0 = time.perf_counter()
    again = last.push(reqs)  # after the rounds: its server work must not slow a timed import
    again_s = time.perf_counter() - t0
    if (again.imported, again.already_present) != (0, n):
        raise RuntimeError(f"second push: {again}")
    best_push, best_raw = min(push_s), min(raw_s)
    ratios = [b / a for a, b in zip(push_s, raw_s, strict=True)]
    out = {
        "n": n,
        "repeats": repeats,
        "push_seconds": [round(s, 4) for s in push_s],
        "raw_seconds": [round(s, 4) for s in raw_s],
        "push_tasks_per_s_best": round(n / best_push, 1),
        "raw_tasks_per_s_best": round(n / best_raw, 1),
        "ratio_push_vs_raw_best": round(best_raw / best_push, 3),
        "ratio_push_vs_raw_per_round": [round(r, 3) for r in ratios],
        "ratio_push_vs_raw_median_round": round(statistics.median(ratios), 3),
        "push_again_all_present_seconds": round(again_s, 4),
    }
    print(
        f"push {out['push_tasks_per_s_best']:.0f} tasks/s, raw import "
        f"{out['raw_tasks_per_s_best']:.0f} tasks/s (best of {repeats}): ratio "
        f"{out['ratio_push_vs_raw_best']:.2f}; second push of the same {n} (all present) "
        f"{out['push_again_all_present_seconds']} s"
    )
    return out


# --------------------------------------------------------------------------------------------
# 2. one loop iteration
# --------------------------------------------------------------------------------------------


def bench_loop(server: Any, root: Path) -> dict[str, Any]:
    from connectors.data.datasets import load
    from connectors.labelstudio.bot import AnnotatorBot
    from connectors.labelstudio.tool import LabelStudioTool
    from connectors.models import make_trainer
    from connectors.store import SqlStore
    from loop.controller import Controller
    from loop.records import Label

    cache = _env_path("ALLOOP_CACHE_DIR", REPO / ".alloop" / "cache")
    t0 = time.perf_counter()
    ds = load("rotten-tomatoes", cache)
    store = SqlStore.open(f"sqlite:///{root / 'state.db'}")
    try:
        store.add_items(ds.items)
        test = ds.split("test")
        store.add_labels(
            Label(it.id, ds.gold[it.id], source="import", annotation_id=f"import:{it.id}")
            for it in test
        )
        ingest_s = time.perf_counter() - t0
        pool_n = len(store.pool())
        trainer = make_trainer("embed-lr", cache_dir=cache / "embeddings")
        embedder = trainer.embedder  # type: ignore[attr-defined]
        t0 = time.perf_counter()
        embedder.embed([it.text for it in ds.items])
        warm_s = time.perf_counter() - t0
        missing_before = int(embedder.misses)
        print(
            f"dataset: {len(ds.items)} items ({pool_n} in the pool, {len(test)} test), "
            f"ingest {ingest_s:.1f} s; embeddings: {missing_before} of {len(ds.items)} texts "
            f"were missing from the cache ({warm_s:.1f} s to fill/read)"
        )

        tool = LabelStudioTool(
            server.url, server.token, project_title="bench-loop", classes=ds.classes
        )
        controller = Controller(
            store,
            trainer,
            tool,
            classes=ds.classes,
            models_dir=root / "models",
            batch_size=20,
            cold_start="random",
            seed=0,
        )
        t0 = time.perf_counter()
        cold = controller.run_iteration()
        cold_s = time.perf_counter() - t0
        bot = AnnotatorBot(
            server.url,
            server.token,
            project_id=tool.ensure_project(),
            gold=ds.gold,
            classes=ds.classes,
        )
        t0 = time.perf_counter()
        answered = bot.answer_pending()
        bot_s = time.perf_counter() - t0
        print(
            f"cold start: {cold.sent} tasks pushed in {cold_s:.2f} s; the bot answered "
            f"{answered.annotations} in {bot_s:.2f} s"
        )

        hits, misses = int(embedder.hits), int(embedder.misses)
        t0 = time.perf_counter()
        rep = controller.run_iteration()
        total_s = time.perf_counter() - t0
        new_misses = int(embedder.misses) - misses
        metrics = dict(rep.metrics or {})
        out = {
            "dataset": "rotten-tomatoes",
            "items": len(ds.items),
            "pool": pool_n,
            "test": len(test),
            "embeddings_missing_before_warmup": missing_before,
            "embeddings_cached_before_run": missing_before == 0,
            "warmup_seconds": round(warm_s, 2),
            "embeddings_cached_for_timed_iteration": new_misses == 0,
            "timed_iteration_embedding_hits": int(embedder.hits) - hits,
            "timed_iteration_embedding_misses": new_misses,
            "cold_start_seconds": round(cold_s, 3),
            "bot_seconds": round(bot_s, 3),
            "bot_annotations": answered.annotations,
            "iteration": rep.number,
            "trained": rep.trained,
            "model_version": rep.model_version,
            "n_labels": rep.n_labels,
            "sent": rep.sent,
            "iteration_seconds": round(total_s, 3),
            "timings_seconds": {k: round(v, 3) for k, v in rep.timings.items()},
            "train_seconds": metrics.get("train_seconds"),
            "eval_seconds": metrics.get("eval_seconds"),
            "test_accuracy": metrics.get("test_accuracy"),
            "test_n": metrics.get("test_n"),
        }
        steps = ", ".join(f"{k} {v:.2f} s" for k, v in rep.timings.items())
        print(
            f"iteration {rep.number}: {total_s:.2f} s ({steps}); train_seconds "
            f"{out['train_seconds']}, eval_seconds {out['eval_seconds']} on {out['test_n']} "
            f"test items (accuracy {out['test_accuracy']}); pushed {rep.sent}; embeddings "
            f"all cached: {out['embeddings_cached_for_timed_iteration']}"
        )
        return out
    finally:
        store.close()


# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="tasks per push (default 1000)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds, best counts (3)")
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    parser.add_argument("--no-loop", action="store_true", help="skip the loop iteration")
    args = parser.parse_args(argv)
    if args.n < 1 or args.repeats < 1:
        parser.error("--n and --repeats must be >= 1")

    from importlib.metadata import version

    from connectors.labelstudio import server as lss

    report: dict[str, Any] = {
        "label_studio": lss.LS_VERSION,
        "label_studio_sdk": version("label-studio-sdk"),
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    with tempfile.TemporaryDirectory(prefix="alloop-bench-ls-") as tmp:
        root = Path(tmp)
        server = start_server(root)
        try:
            report["push"] = bench_push(server, args.n, args.repeats)
            if not args.no_loop:
                report["loop"] = bench_loop(server, root)
        finally:
            server.stop()
    print(json.dumps(report, indent=2))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

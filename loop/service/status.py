"""What ``alloop status`` and ``GET /api/status`` show, computed from a store (no web framework,
no connectors: the CLI imports this cheaply)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from loop.contracts import Store
from loop.quality import META_KEY as QUALITY_KEY
from loop.quality import status_view
from loop.records import Iteration, ModelVersion

CURVE_METRICS = ("accuracy", "macro_f1", "n")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def model_info(mv: ModelVersion, *, full: bool = True) -> dict[str, Any]:
    """One model version as JSON-ready data (``full=False``: without config and path)."""
    out: dict[str, Any] = {
        "id": mv.id,
        "trainer": mv.trainer,
        "n_labels": mv.n_labels,
        "status": mv.status,
        "metrics": dict(mv.metrics),
    }
    if full:
        out.update(
            {
                "label_revision": mv.label_revision,
                "classes": list(mv.classes),
                "iteration": mv.iteration,
                "created_at": _iso(mv.created_at),
                "path": mv.path,
                "config": dict(mv.config),
            }
        )
    return out


def iteration_info(it: Iteration, *, full: bool = True) -> dict[str, Any]:
    """One iteration as JSON-ready data (``full=False``: number, status, step, model only)."""
    out: dict[str, Any] = {
        "number": it.number,
        "status": it.status,
        "step": it.step,
        "model_version": it.model_version,
    }
    if full:
        out.update(
            {
                "started_at": _iso(it.started_at),
                "finished_at": _iso(it.finished_at),
                "timings": dict(it.timings),
                "info": dict(it.info),
            }
        )
    return out


def current_batch(iterations: list[Iteration]) -> dict[str, Any] | None:
    """Which model picked the newest batch: the newest iteration that selected items with a
    model (cold-start batches have none), or None."""
    for it in reversed(iterations):
        picked = it.info.get("picked_by")
        if picked and it.info.get("selected"):
            return {"iteration": it.number, "selected": it.info["selected"], **picked}
    return None


def metrics_note(n_eval: int, eval_labeled: int, n_test: int) -> str:
    """Whether the recorded metrics can be trusted yet, in one sentence."""
    if n_eval == 0:
        return (
            "metrics are on the held-out test split"
            if n_test
            else "no held-out data: set eval_sample_size to measure the model"
        )
    if eval_labeled < n_eval:
        return (
            f"NOT YET TRUSTWORTHY: {eval_labeled}/{n_eval} items of the random evaluation "
            "sample are labeled (actively selected labels are a biased sample)"
        )
    return f"trustworthy: the random evaluation sample ({n_eval} items) is labeled"


def project_status(
    store: Store, *, database: str | None = None, recent_iterations: int = 10
) -> dict[str, Any]:
    """The project's state: items per split, pool size, training labels per class, ties,
    agreement, rejected answers, every model version with its metrics, the last
    ``recent_iterations`` iterations, the evaluation sample and whether metrics are trustworthy
    (``metrics_note``). The shape of ``alloop status --json``; ``database`` (already redacted)
    is included when given."""
    ts = store.training_set()
    items = {sp: store.count_items(sp) for sp in ("train", "test", "eval")}
    info: dict[str, Any] = {}
    if database is not None:
        info["database"] = database
    info.update(
        {
            "items": items,
            "pool": store.count_pool(),
            "classes": store.get_meta("classes"),
            "labels_per_class": dict(Counter(ts.labels)),
            "ties_left_out": len(ts.ties),
            "rejected_answers": len(store.rejections()),
            "agreement": ts.agreement,
            "model_versions": [model_info(m, full=False) for m in store.model_versions()],
            "iterations": [
                iteration_info(i, full=False) for i in store.iterations()[-recent_iterations:]
            ],
        }
    )
    eval_labeled = len(store.training_set("eval"))
    info["eval_sample"] = {"size": items["eval"], "labeled": eval_labeled}
    last = next(
        (it.info["stopping"] for it in reversed(store.iterations()) if "stopping" in it.info),
        None,
    )
    info["stopping"] = last  # the criteria as the newest iteration evaluated them
    info["current_batch"] = current_batch(store.iterations())
    info["metrics_note"] = metrics_note(items["eval"], eval_labeled, items["test"])
    info["quality"] = status_view(store.get_meta(QUALITY_KEY), store.label_revision())
    return info


def learning_curve(versions: list[ModelVersion]) -> list[dict[str, Any]]:
    """One point per model version, oldest first: labels trained on (``n_labels``) against
    accuracy and macro-F1 on the test split and on the evaluation sample (None where the
    version has no such metric)."""
    points = []
    for mv in versions:
        m: Mapping[str, Any] = mv.metrics
        point: dict[str, Any] = {
            "model_version": mv.id,
            "status": mv.status,
            "n_labels": mv.n_labels,
            "iteration": mv.iteration,
            "created_at": _iso(mv.created_at),
        }
        for split in ("test", "eval"):
            for name in CURVE_METRICS:
                point[f"{split}_{name}"] = m.get(f"{split}_{name}")
        points.append(point)
    return points

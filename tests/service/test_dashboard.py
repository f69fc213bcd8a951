"""The people's page and the report, rendered from a real SQLite store (the in-memory Label
Studio of tests/service; the real-browser test against a real Label Studio is
test_dashboard_browser.py): the numbers are the API's, the page loads nothing from elsewhere,
the report is one self-contained file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from loop.cli import app
from loop.dashboard import (
    _nice_ticks,
    project_view,
    render_project_report,
    render_simulation_report,
    simulation_view,
    svg_curves,
)
from loop.errors import DataError
from loop.metrics import per_class
from tests.service.conftest import Env


def _answer_sent(env: Env) -> None:
    for item in env.tool.unanswered():
        assert env.hook(env.tool.annotate(item, env.gold[item])).status_code == 200


def _trained(env: Env, rounds: int = 5) -> None:
    env.controller.run_iteration()
    for _ in range(rounds):
        _answer_sent(env)
        env.controller.run_iteration()


def _field(html: str, name: str) -> str:
    m = re.search(rf'data-field="{name}"[^>]*>([^<]*)<', html)
    assert m, name
    return m.group(1).strip()


def test_the_dashboard_shows_the_apis_numbers_and_loads_nothing_from_elsewhere(make_env) -> None:  # type: ignore[no-untyped-def]
    env: Env = make_env()
    _trained(env)
    r = env.client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    html = r.text
    status = env.client.get("/api/status").json()
    models = env.client.get("/api/models").json()
    assert _field(html, "pool") == f"{status['pool']:,}"
    assert _field(html, "labeled") == f"{sum(status['labels_per_class'].values()):,}"
    assert _field(html, "current-model") == models["current"]
    assert _field(html, "waiting") == str(status["waiting_for_answers"])
    for c, n in status["labels_per_class"].items():
        assert f'data-class-count="{c}">{n}<' in html
    for m in models["models"]:  # every version, its status and test accuracy
        assert f'data-model-status="{m["id"]}">{m["status"]}<' in html
        assert f'data-model-acc="{m["id"]}">{100 * m["metrics"]["test_accuracy"]:.1f} %<' in html
    # the curve: one dot per version with a test accuracy
    points = env.client.get("/api/learning-curve").json()["points"]
    assert html.count('class="point"') == sum(p["test_accuracy"] is not None for p in points)
    # nothing from elsewhere: no external script, style, image or font
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "<script src" not in html
    # promote buttons for the versions that are not current, a rollback button
    assert html.count('data-action="promote"') == len(models["models"]) - 1
    assert 'data-action="rollback"' in html
    # the live part alone, and the old path
    part = env.client.get("/ui/main")
    assert part.status_code == 200 and "<html" not in part.text and 'data-field="pool"' in part.text
    assert env.client.get("/dashboard", follow_redirects=False).headers["location"] == "/"


def test_the_project_report_is_one_file_without_script_or_buttons(make_env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env: Env = make_env()
    _trained(env, rounds=4)
    view = project_view(env.store)
    html = render_project_report(view)
    assert "<script" not in html and "data-action" not in html
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "<svg" in html and view["current"] in html
    # the current model's per-class metrics on the test split are in the report
    cur = env.store.get_model_version(view["current"])
    for c, m in cur.metrics["test_per_class"].items():
        assert f"<td>{c}</td>" in html and m["support"] >= 0
    # the command writes it atomically, in one file
    home = env.settings.home
    out = tmp_path / "r" / "report.html"
    db = env.store.url  # type: ignore[attr-defined]
    res = CliRunner().invoke(
        app, ["report", "--out", str(out), "--home", str(home)], env={"ALLOOP_DATABASE_URL": db}
    )
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert "<svg" in text and "alloop report" in text and view["current"] in text
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]


def _summary() -> dict:
    labels = [50, 100, 150, 200]

    def strat(accs: list[list[float]]) -> dict:
        import numpy as np

        a = np.array(accs)
        return {
            "labels": labels,
            "accuracy": a.mean(axis=0).tolist(),
            "accuracy_std": a.std(axis=0).tolist(),
            "auc": float(a.mean()),
            "auc_std": float(a.mean(axis=1).std()),
            "auc_per_seed": a.mean(axis=1).tolist(),
            "final_accuracy": float(a[:, -1].mean()),
            "final_accuracy_std": float(a[:, -1].std()),
            "final_macro_f1": float(a[:, -1].mean()) - 0.01,
            "select_seconds": 0.01,
            "train_seconds": 0.02,
            "final_per_class": {
                c: {"precision": 0.8, "recall": 0.7, "f1": f1, "support": 100}
                for c, f1 in (("a", float(a[:, -1].mean()) - 0.02), ("b", 0.75))
            },
            "stopping": {
                "plateau": {
                    "fired_at_labels": [150, None],
                    "fired_in_runs": 1,
                    "accuracy_at_stop": 0.8,
                    "final_accuracy": 0.85,
                    "labels_saved": 50.0,
                }
            },
            "per_seed": [{"seed": i, "labels": labels, "accuracy": r} for i, r in enumerate(accs)],
        }

    return {
        "dataset": "toy",
        "model": "embed-lr",
        "classes": ["a", "b"],
        "pool_size": 1000,
        "test_size": 200,
        "config": {"initial": 50, "step": 50, "budget": 200, "seeds": 2, "cold_start": "random"},
        "full_data_accuracy": None,
        "strategies": {
            "random": strat([[0.6, 0.7, 0.75, 0.78], [0.62, 0.69, 0.74, 0.79]]),
            "margin": strat([[0.6, 0.74, 0.8, 0.83], [0.62, 0.73, 0.79, 0.82]]),
        },
    }


def test_the_simulation_report_puts_the_strategies_side_by_side(tmp_path: Path) -> None:
    summary = _summary()
    view = simulation_view(summary)
    assert view["best"] == "margin"
    row = {r["name"]: r for r in view["rows"]}
    assert row["margin"]["delta"] == pytest.approx(
        summary["strategies"]["margin"]["auc"] - summary["strategies"]["random"]["auc"]
    )
    assert view["forecast"] is not None and view["forecast_of"] == "random"
    html = render_simulation_report(view)
    assert html.count('class="series"') == 2 and html.count('class="point"') == 8
    assert f'data-auc="margin">{summary["strategies"]["margin"]["auc"]:.4f}' in html
    assert "<script" not in html
    f1_a = 100 * (summary["strategies"]["margin"]["final_accuracy"] - 0.02)
    assert f'data-class-f1="a">{f1_a:.1f} %<' in html  # the per-class table
    assert html.count('data-class-f1="b">75.0 %<') == 2
    p = tmp_path / "summary.json"
    p.write_text(json.dumps(summary))
    out = tmp_path / "sim.html"
    res = CliRunner().invoke(app, ["report", "--from-summary", str(p), "--out", str(out)])
    assert res.exit_code == 0, res.output and out.is_file()
    with pytest.raises(DataError, match="not a simulation summary"):
        simulation_view({"dataset": "x"})
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    res = CliRunner().invoke(app, ["report", "--from-summary", str(bad), "--out", str(out)])
    assert res.exit_code != 0 and "not a simulation summary" in str(res.exception)
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".sim.html")]


def test_svg_curves_scale_and_describe_the_points() -> None:
    empty = svg_curves([], title="t")
    assert "no model versions yet" in empty and "<title>t</title>" in empty
    svg = svg_curves(
        [{"name": "test accuracy", "x": [10, 20, 40], "y": [0.5, 0.7, None]}],
        band={"n": [10, 40], "fit": [0.5, 0.8], "low": [0.45, 0.7], "high": [0.55, 0.9]},
        marker={"x": 60, "y": 0.82, "low": 0.75, "high": 0.88},
    )
    assert svg.count('class="point"') == 2  # the missing value is not drawn
    assert 'class="band"' in svg and 'class="fit"' in svg and 'class="fc"' in svg
    assert "<desc>" in svg and 'role="img"' in svg
    assert _nice_ticks(0, 39) == [0, 10, 20, 30] and _nice_ticks(0, 500)[-1] == 500


def test_per_class_metrics_by_hand() -> None:
    m = per_class(["a", "a", "b", "b"], ["a", "b", "b", "b"], ["a", "b", "c"])
    assert m["a"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert m["b"]["precision"] == pytest.approx(2 / 3) and m["b"]["recall"] == 1.0
    assert m["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}

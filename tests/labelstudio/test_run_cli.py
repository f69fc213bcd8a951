"""`alloop ingest` + `alloop run` + `alloop iterate` as a user runs them, against the real Label
Studio of the test session (URL and token from settings), with the real embed-lr model."""

from __future__ import annotations

import csv
import json
import uuid
from pathlib import Path

import pytest

from connectors.labelstudio import server as lss
from connectors.labelstudio.bot import AnnotatorBot
from connectors.labelstudio.tool import LabelStudioTool
from tests.labelstudio.ls_helpers import alloop_cli, alloop_env
from tests.models.models_testdata import NEGATIVE, POSITIVE

pytestmark = [pytest.mark.labelstudio, pytest.mark.slow]


def test_run_pushes_with_predictions_then_retrains_on_answers(
    tmp_path: Path, ls_server: lss.LocalLabelStudio, cache_dir: Path
) -> None:
    title = f"alloop-run-{uuid.uuid4().hex[:8]}"
    env = alloop_env(
        tmp_path / "home",
        cache_dir,
        ls_server.url,
        ls_server.token,
        title,
        ALLOOP_LABEL_STUDIO__POLL_SECONDS="0.2",
        ALLOOP_BATCH_SIZE="6",
        ALLOOP_MIN_NEW_LABELS="6",
        ALLOOP_EVAL_SAMPLE_SIZE="4",
    )
    f = tmp_path / "items.csv"
    rows = [(f"p{i}", t, "pos") for i, t in enumerate(POSITIVE)] + [
        (f"n{i}", t, "neg") for i, t in enumerate(NEGATIVE)
    ]
    gold = {i: y for i, _, y in rows}
    with f.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text", "label", "split"])
        for n, (i, t, y) in enumerate(rows):
            # the first 3 of each class arrive labeled; every 5th is held out; the rest is the pool
            if n % 5 == 0:
                w.writerow([i, t, y, "test"])
            elif int(i[1:]) < 4:
                w.writerow([i, t, y, "train"])
            else:
                w.writerow([i, t, "", "train"])
    r = alloop_cli(env, "ingest", str(f))
    assert r.returncode == 0, r.stderr
    r = alloop_cli(env, "run", "--max-polls", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "iteration 1" in r.stdout and "trained v0001" in r.stdout and "sent 10" in r.stdout, (
        r.stdout
    )
    assert "/projects/" in r.stdout

    tool = LabelStudioTool(
        ls_server.url, ls_server.token, project_title=title, classes=("neg", "pos")
    )
    pid = tool.ensure_project()
    tasks = list(tool._list_tasks(pid, [], fields="all", what="listing"))  # noqa: SLF001 - test inspection
    assert len(tasks) == 10
    kinds = [t["data"]["alloop_kind"] for t in tasks]
    assert kinds.count("eval") == 4 and kinds.count("query") == 6
    for t in tasks:
        (pred,) = t["predictions"]
        assert pred["model_version"].startswith("v0001")
        assert pred["result"][0]["value"]["choices"][0] in ("neg", "pos")

    st = json.loads(alloop_cli(env, "status", "--json").stdout)
    assert (
        st["eval_sample"] == {"size": 4, "labeled": 0}
        and "NOT YET TRUSTWORTHY" in st["metrics_note"]
    )

    bot = AnnotatorBot(
        ls_server.url, ls_server.token, project_id=pid, gold=gold, classes=("neg", "pos")
    )
    report = bot.answer_pending()
    assert report.annotations == 10
    r = alloop_cli(env, "iterate")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "trained v0002" in r.stdout, r.stdout
    st = json.loads(alloop_cli(env, "status", "--json").stdout)
    assert st["eval_sample"] == {"size": 4, "labeled": 4} and st["metrics_note"].startswith(
        "trustworthy"
    )
    assert (
        sum(st["labels_per_class"].values()) == 6 + 6
    )  # imported + answered queries, not the eval sample
    latest = st["model_versions"][-1]
    assert latest["metrics"]["eval_n"] == 4 and latest["metrics"]["test_n"] == 8
    assert len(list(tool._list_tasks(pid, [], fields="task_only", what="listing"))) == 16  # noqa: SLF001

"""`alloop check --review N` against the real Label Studio of the test session: the likeliest
label errors of an imported, partly mislabeled file become review tasks (no pre-annotation);
an answer joins the item's labels as one more vote; nothing is sent twice."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from connectors.labelstudio import server as lss
from connectors.labelstudio.tool import KIND_FIELD, LabelStudioTool
from tests.labelstudio.ls_helpers import alloop_cli, alloop_env, annotate, tasks_of
from tests.models.models_testdata import NEGATIVE, POSITIVE

pytestmark = [pytest.mark.labelstudio, pytest.mark.slow]


def test_review_sends_the_likeliest_errors_and_takes_the_answer_as_a_vote(
    tmp_path: Path, ls_server: lss.LocalLabelStudio, cache_dir: Path
) -> None:
    title = f"alloop-review-{uuid.uuid4().hex[:8]}"
    env = alloop_env(tmp_path / "home", cache_dir, ls_server.url, ls_server.token, title)
    rows = [(f"p{i}", t, "pos") for i, t in enumerate(POSITIVE)] + [
        (f"n{i}", t, "neg") for i, t in enumerate(NEGATIVE)
    ]
    flipped = {"p1", "n2"}  # planted label errors
    f = tmp_path / "items.jsonl"
    f.write_text(
        "".join(
            json.dumps(
                {
                    "id": i,
                    "text": t,
                    "label": ({"pos": "neg", "neg": "pos"}[y] if i in flipped else y),
                }
            )
            + "\n"
            for i, t, y in rows
        )
    )
    assert alloop_cli(env, "ingest", str(f)).returncode == 0
    r = alloop_cli(env, "check", "--review", "2", "--folds", "3", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(r.stdout[: r.stdout.rindex("}") + 1])
    found = next(x for x in report["findings"] if x["check"] == "label-errors")
    ranked = [e["item_id"] for e in found["examples"]]
    # the real model finds some of the planted errors among its first two suspects
    assert flipped & set(ranked[:2]), (ranked, found["message"])
    assert "review: 2 review task(s) sent" in r.stdout
    tool = LabelStudioTool(
        ls_server.url, ls_server.token, project_title=title, classes=("neg", "pos")
    )
    tasks = tasks_of(tool)
    assert sorted(t["data"]["alloop_id"] for t in tasks) == sorted(ranked[:2])
    assert all(t["data"][KIND_FIELD] == "review" for t in tasks)
    # an unbiased second opinion: no class pre-selected, only the queue score
    assert all(p["result"] == [] for t in tasks for p in t["predictions"])
    # again: nothing new is sent for a task still waiting
    r = alloop_cli(env, "check", "--review", "2", "--folds", "3")
    assert "0 review task(s) sent to Label Studio, 2 already there" in r.stdout, r.stdout
    # the reviewer answers the planted error with the true class: a 1-1 tie, out of training
    wrong = next(i for i in ranked[:2] if i in flipped)
    truth = dict((i, y) for i, _, y in rows)[wrong]
    annotate(tool, wrong, truth)
    r = alloop_cli(env, "iterate")
    assert r.returncode == 0, r.stderr[-2000:]
    st = json.loads(alloop_cli(env, "status", "--json").stdout)
    assert st["ties_left_out"] == 1
    r = alloop_cli(env, "check", "--review", "2", "--folds", "3", "--json")
    report = json.loads(r.stdout[: r.stdout.rindex("}") + 1])
    ties = next(x for x in report["findings"] if x["check"] == "annotator-ties")
    assert [e["item_id"] for e in ties["examples"]] == [wrong]

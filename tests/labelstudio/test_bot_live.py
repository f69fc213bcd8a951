"""AnnotatorBot against a real Label Studio 1.23.2 (the session server)."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from connectors.labelstudio import server as lss
from connectors.labelstudio.bot import AnnotatorBot
from connectors.labelstudio.tool import LabelStudioTool
from loop.errors import ConfigError, DataError, LabelingToolError
from loop.records import Label
from tests.labelstudio.ls_helpers import requests_for, tasks_of

pytestmark = pytest.mark.labelstudio

MakeTool = Callable[..., LabelStudioTool]
CLASSES = ("pos", "neg", "mixed")


def _gold(ids: list[str]) -> dict[str, str]:
    return {i: CLASSES[n % len(CLASSES)] for n, i in enumerate(ids)}


def _bot(tool: LabelStudioTool, gold: dict[str, str], **kwargs) -> AnnotatorBot:
    return AnnotatorBot(
        tool.url,
        tool._token,
        project_id=tool.ensure_project(),
        gold=gold,
        classes=tool.classes,
        **kwargs,
    )


def _by_item(labels: tuple[Label, ...]) -> dict[str, list[Label]]:
    out: dict[str, list[Label]] = {}
    for label in labels:
        out.setdefault(label.item_id, []).append(label)
    return out


def _within(count: int, n: int, p: float, sigmas: float = 4.0) -> bool:
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


def test_rates_hold_answers_are_deterministic_and_a_rerun_adds_nothing(
    make_tool: MakeTool,
) -> None:
    ids = [f"item-{i:03d}" for i in range(200)]
    gold = _gold(ids)
    tool = make_tool(CLASSES)
    tool.send(requests_for(ids, prediction=None, model_version=None))
    bot = _bot(tool, gold, error_rate=0.2, skip_rate=0.1, seed=7)
    report = bot.answer_pending()

    assert (report.tasks, report.annotations) == (200, 200)
    assert _within(report.skipped, 200, 0.1) and _within(report.wrong, 200, 0.2)
    assert report.skipped == sum(a.skipped for a in report.answers)
    assert report.wrong == sum(a.wrong for a in report.answers)
    # each answer is what the pure decision says, and is in Label Studio as written
    fetched = _by_item(tool.fetch_labels(None).labels)
    assert tool.last_rejections == ()
    for a in report.answers:
        d = bot.decide(a.item_id, 1)
        assert (a.value, a.skipped, a.wrong) == (d.value, d.skipped, d.wrong)
        if a.skipped:
            assert a.value is None
        elif a.wrong:
            assert a.value in CLASSES and a.value != gold[a.item_id]
        else:
            assert a.value == gold[a.item_id]
        (label,) = fetched[a.item_id]
        assert (label.value, label.skipped) == (a.value, a.skipped)
        assert label.annotation_id == str(a.annotation_id)
        assert label.annotator == str(bot.user_ids[0])
    # wrong answers spread over both other classes
    assert len({(gold[a.item_id], a.value) for a in report.answers if a.wrong}) > 3

    # a rerun answers nothing new; nothing changes in Label Studio
    again = bot.answer_pending()
    assert (again.tasks, again.annotations, again.skipped, again.wrong) == (0, 0, 0, 0)
    assert sum(t["total_annotations"] + t["cancelled_annotations"] for t in tasks_of(tool)) == 200

    # same seed, another project, a subset pushed in reverse order (other task ids, other
    # listing order), two workers: exactly the same answers per item
    subset = ids[::-1][:30]
    other = make_tool(CLASSES)
    other.send(requests_for(subset, prediction=None, model_version=None))
    twin = _bot(other, gold, error_rate=0.2, skip_rate=0.1, seed=7, workers=2)
    twin_report = twin.answer_pending()
    mine = {a.item_id: (a.value, a.skipped) for a in report.answers}
    assert {a.item_id: (a.value, a.skipped) for a in twin_report.answers} == {
        i: mine[i] for i in subset
    }
    assert twin_report.wrong == sum(a.wrong for a in report.answers if a.item_id in subset)
    # another seed gives other answers
    reseeded = _bot(other, gold, error_rate=0.2, skip_rate=0.1, seed=8)
    assert [reseeded.decide(i) for i in ids] != [bot.decide(i) for i in ids]


def test_several_annotators_are_distinct_users_and_answer_once_each(
    ls_server: lss.LocalLabelStudio, make_tool: MakeTool
) -> None:
    ids = [f"m{i:02d}" for i in range(24)]
    gold = _gold(ids)
    tool = make_tool(CLASSES)
    tool.send(requests_for(ids, prediction=None, model_version=None))
    bot = _bot(tool, gold, annotators=3, error_rate=0.3, skip_rate=0.1, seed=3)
    report = bot.answer_pending()
    assert (report.tasks, report.annotations) == (24, 72)

    users = {u.id: u for u in tool.client.users.list()}
    assert len(set(bot.user_ids)) == 3
    assert [users[uid].email for uid in bot.user_ids] == [
        "bot1@alloop.local",
        "bot2@alloop.local",
        "bot3@alloop.local",
    ]
    admin = tool.client.users.whoami().id
    assert admin not in bot.user_ids
    for task in tasks_of(tool):
        authors = [a["completed_by"] for a in task["annotations"]]
        assert sorted(authors) == sorted(bot.user_ids)
    # annotators draw independently: some items get disagreeing answers
    values = _by_item(tool.fetch_labels(None).labels)
    assert any(len({x.value for x in v if not x.skipped}) > 1 for v in values.values())

    # a new bot object finds the same users (creates none) and has nothing to answer
    n_users = len(users)
    again = _bot(tool, gold, annotators=3, error_rate=0.3, skip_rate=0.1, seed=3)
    assert again.user_ids == bot.user_ids
    assert again.answer_pending().annotations == 0
    assert len(tool.client.users.list()) == n_users
    # one more annotator: exactly one new annotation per task, by a fourth user
    four = _bot(tool, gold, annotators=4, error_rate=0.3, skip_rate=0.1, seed=3)
    assert four.user_ids[:3] == bot.user_ids
    added = four.answer_pending()
    assert (added.tasks, added.annotations) == (24, 24)
    assert {a.user_id for a in added.answers} == {four.user_ids[3]}
    # the first three annotators' answers did not change
    assert [bot.decide(i, n) for i in ids for n in (1, 2, 3)] == [
        four.decide(i, n) for i in ids for n in (1, 2, 3)
    ]


def test_edit_skip_delete_helpers_change_the_bots_own_annotation(make_tool: MakeTool) -> None:
    ids = ["h1", "h2", "h3", "h4"]
    tool = make_tool(CLASSES)
    tool.send(requests_for(ids, prediction=None, model_version=None))
    bot = _bot(tool, {i: "pos" for i in ids}, annotators=2)
    report = bot.answer_pending(item_ids=["h1", "h2", "h3"])  # h4 stays unanswered
    assert report.annotations == 6 and {a.item_id for a in report.answers} == {"h1", "h2", "h3"}
    first = {(a.item_id, a.annotator): a.annotation_id for a in report.answers}

    assert bot.edit("h1", "neg", annotator=2) == first[("h1", 2)]
    assert bot.skip("h2") == first[("h2", 1)]
    assert bot.delete("h3", annotator=2) == first[("h3", 2)]
    skip_h4 = bot.skip("h4")  # no annotation yet: a new skip
    got = {(x.item_id, x.annotator): x for x in tool.fetch_labels(None).labels}
    u1, u2 = (str(u) for u in bot.user_ids)
    assert (got[("h1", u2)].value, got[("h1", u1)].value) == ("neg", "pos")
    assert got[("h2", u1)].skipped and got[("h2", u1)].value is None
    assert ("h3", u2) not in got and got[("h3", u1)].value == "pos"
    assert got[("h4", u1)].skipped and got[("h4", u1)].annotation_id == str(skip_h4)
    # a skip edited back into an answer
    bot.edit("h2", "mixed")
    h2 = [x for x in tool.fetch_labels(None).labels if x.item_id == "h2" and x.annotator == u1]
    assert [(x.value, x.skipped) for x in h2] == [("mixed", False)]
    with pytest.raises(DataError, match="no annotation on item 'h3'"):
        bot.delete("h3", annotator=2)
    with pytest.raises(DataError, match="not one of the classes"):
        bot.edit("h1", "maybe")
    with pytest.raises(ConfigError, match=r"annotator must be in 1\.\.2"):
        bot.edit("h1", "neg", annotator=3)
    with pytest.raises(DataError, match="one task for item 'nope'"):
        bot.skip("nope")


def test_items_without_gold_are_refused_before_anything_is_written(make_tool: MakeTool) -> None:
    tool = make_tool(CLASSES)
    tool.send(requests_for(["g1", "g2", "stranger"], prediction=None, model_version=None))
    bot = _bot(tool, {"g1": "pos", "g2": "neg"})
    with pytest.raises(DataError) as err:
        bot.answer_pending()
    assert "'stranger'" in str(err.value) and "Fix:" in str(err.value)
    assert all(t["total_annotations"] + t["cancelled_annotations"] == 0 for t in tasks_of(tool))
    assert bot.answer_pending(item_ids=["g1", "g2"]).annotations == 2


def test_bad_settings_and_unreachable_server_are_clear_errors(
    ls_server: lss.LocalLabelStudio, make_tool: MakeTool
) -> None:
    gold = {"a": "pos"}
    common = {"project_id": 1, "gold": gold, "classes": CLASSES}
    url, token = ls_server.url, ls_server.token
    for kwargs, match in [
        ({"error_rate": 0.7, "skip_rate": 0.4}, "error_rate \\+ skip_rate"),
        ({"skip_rate": -0.1}, "skip_rate must be in"),
        ({"annotators": 0}, "annotators must be"),
        ({"seed": -1}, "seed must be"),
    ]:
        with pytest.raises(ConfigError, match=match):
            AnnotatorBot(url, token, **common, **kwargs)
    with pytest.raises(DataError, match="among the classes"):
        AnnotatorBot(url, token, project_id=1, gold={"a": "maybe"}, classes=CLASSES)
    # a project that does not exist
    missing = AnnotatorBot(url, token, **{**common, "project_id": 987654})
    with pytest.raises(LabelingToolError, match="404"):
        missing.answer_pending()
    # a project whose classes lack the bot's
    tool = make_tool(("pos", "neg"))
    narrow = AnnotatorBot(url, token, project_id=tool.ensure_project(), gold=gold, classes=CLASSES)
    with pytest.raises(DataError, match="no choice for the bot's classes \\['mixed'\\]"):
        narrow.answer_pending()
    # nothing listens there
    dead = AnnotatorBot(f"http://127.0.0.1:{lss.free_port()}", token, **common)
    with pytest.raises(LabelingToolError) as err:
        dead.answer_pending()
    assert "check Label Studio is running" in str(err.value) and token not in str(err.value)

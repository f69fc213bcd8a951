"""The text the model sees: input.template (loop.template) and several text columns joined at
ingest (connectors.data.files)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from loop.errors import ConfigError
from loop.template import SIDE_FILE, TemplatedClassifier, TemplateTrainer, check_template
from tests.fakes import BowTrainer, toy_corpus


class Spy(BowTrainer):
    def __init__(self) -> None:
        super().__init__()
        self.trained_on: list[str] = []

    def train(self, texts, labels, *, classes, seed, progress=None):  # type: ignore[no-untyped-def,override]
        self.trained_on = list(texts)
        return super().train(texts, labels, classes=classes, seed=seed)


def test_training_and_scoring_both_see_the_template(tmp_path: Path) -> None:
    rows, classes = toy_corpus(10)
    texts, labels = [r[1] for r in rows], [r[2] for r in rows]
    spy = Spy()
    t = TemplateTrainer(spy, "Movie review: {text} (pos or neg?)")
    clf = t.train(texts, labels, classes=classes, seed=0)
    assert spy.trained_on[0] == f"Movie review: {texts[0]} (pos or neg?)"
    assert isinstance(clf, TemplatedClassifier)
    inner = clf.inner
    want = inner.predict_proba([f"Movie review: {x} (pos or neg?)" for x in texts[:3]])
    assert np.allclose(clf.predict_proba(texts[:3]), want)
    clf.save(tmp_path / "v")
    assert json.loads((tmp_path / "v" / SIDE_FILE).read_text())["template"].startswith("Movie")
    # a version loads with the template it was trained with, whatever is set now
    loaded = TemplateTrainer(Spy(), "{text}!").load(tmp_path / "v")
    assert np.allclose(loaded.predict_proba(texts[:3]), want)
    inner.save(tmp_path / "plain")  # trained without a template: loads plain
    plain = TemplateTrainer(Spy(), "x {text}").load(tmp_path / "plain")
    assert not isinstance(plain, TemplatedClassifier)
    assert t.config()["input_template"] == "Movie review: {text} (pos or neg?)"
    assert not hasattr(clf, "predict_proba_samples")  # the toy model has no samples


@pytest.mark.parametrize("bad", ["no field", "{text} {text}", "{title}: {text}", "{text"])
def test_bad_templates_get_a_clear_error(bad: str) -> None:
    with pytest.raises(ConfigError, match="input.template"):
        check_template(bad)
    from loop.settings import Settings

    with pytest.raises(Exception, match="input.template"):
        Settings(input={"template": bad})


def test_wiring_applies_the_template_under_augmentation(tmp_path: Path) -> None:
    from loop.augment import AugmentingTrainer
    from loop.settings import Settings
    from loop.wiring import make_trainer

    s = Settings(home=tmp_path, input={"template": "Review: {text}"})
    assert isinstance(make_trainer(s), TemplateTrainer)
    s = Settings(
        home=tmp_path, input={"template": "Review: {text}"}, augment={"techniques": ["swap"]}
    )
    t = make_trainer(s)
    assert isinstance(t, AugmentingTrainer) and isinstance(t.inner, TemplateTrainer)
    assert not isinstance(make_trainer(Settings(home=tmp_path)), TemplateTrainer)


def test_ingest_joins_several_text_columns(tmp_path: Path) -> None:
    from connectors.data.files import read_items

    f = tmp_path / "news.csv"
    f.write_text(
        "id,title,body,label\n1,Rates held,The bank held rates.,business\n2,,Only a body.,tech\n"
    )
    res = read_items(f, text_col="title,body")
    assert [it.text for it in res.items] == ["Rates held | The bank held rates.", "Only a body."]
    assert "title" not in res.items[0].meta and "body" not in res.items[0].meta
    assert (
        read_items(f, text_col="title,body", text_sep=". ").items[0].text.startswith("Rates held. ")
    )
    with pytest.raises(Exception, match="headline"):
        read_items(f, text_col="headline,body")
    with pytest.raises(ConfigError, match="distinct names"):
        read_items(f, text_col="body,body")
    blank = tmp_path / "blank.csv"
    blank.write_text("id,title,body\n1,,\n2,a,b\n")
    with pytest.raises(Exception, match="blank"):
        read_items(blank, text_col="title,body")

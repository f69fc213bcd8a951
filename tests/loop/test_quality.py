"""``alloop check``'s checks (loop.quality) on planted problems, and cleanlab's label-error
search (connectors.quality) on planted label flips."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from loop.errors import DataError
from loop.quality import (
    CHECKS,
    CheckOptions,
    check_project,
    exact_groups,
    fold_text,
    near_pairs,
    out_of_fold_proba,
    pair_groups,
    status_view,
    stratified_folds,
    summary,
)
from loop.records import Item, Label
from tests.fakes import BowTrainer


def _vec(text: str, dim: int = 1 << 16) -> np.ndarray:
    """Bag of words, hashed into many buckets (no collisions among the tests' few words)."""
    import hashlib
    import re

    v = np.zeros(dim, dtype=np.float32)
    for tok in re.findall(r"\w+", text.lower()):
        v[int(hashlib.md5(tok.encode()).hexdigest(), 16) % dim] += 1
    return v


def test_near_pairs_equals_brute_force_within_and_between() -> None:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(300, 16)).astype(np.float32)
    emb[10] = emb[3] + 0.01  # planted near duplicates
    emb[250] = emb[3] * 2.0  # same direction: cosine 1
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    sims = emb @ emb.T
    want = {(i, j) for i in range(300) for j in range(i + 1, 300) if sims[i, j] >= 0.9}
    got = near_pairs(emb, 0.9, block=37)  # a block size that does not divide n
    assert {(i, j) for i, j, _ in got} == want
    assert {(3, 10), (3, 250), (10, 250)} <= want
    assert all(abs(c - sims[i, j]) < 1e-5 for i, j, c in got)
    other = emb[[3, 100]]
    between = {(i, j) for i, j, _ in near_pairs(emb, 0.9, other=other)}
    assert between == {(i, j) for i in range(300) for j in range(2) if sims[i, [3, 100][j]] >= 0.9}
    assert (3, 0) in between and (100, 1) in between


def test_pair_groups_are_connected_components() -> None:
    groups = pair_groups(8, [(0, 1, 1.0), (1, 5, 1.0), (2, 3, 1.0)])
    assert groups == [[0, 1, 5], [2, 3]]
    assert pair_groups(3, []) == []


def test_exact_groups_fold_case_and_space() -> None:
    texts = ["Good  film", "good film ", "bad", "GOOD FILM", "bad ", "other"]
    assert exact_groups(texts) == [[0, 1, 3], [2, 4]]
    assert fold_text("  A\tB  ") == "a b"


def test_stratified_folds_deal_each_class_evenly() -> None:
    y = np.asarray([0] * 23 + [1] * 7 + [2] * 5)
    folds = stratified_folds(y, 5, seed=3)
    for cls in range(3):
        counts = np.bincount(folds[y == cls], minlength=5)
        assert counts.max() - counts.min() <= 1
    assert np.array_equal(folds, stratified_folds(y, 5, seed=3))


def test_out_of_fold_never_predicts_an_item_with_a_model_that_saw_it() -> None:
    class Recording(BowTrainer):
        def __init__(self) -> None:
            super().__init__()
            self.seen: list[set[str]] = []

        def train(self, texts, labels, *, classes, seed, progress=None):  # type: ignore[no-untyped-def,override]
            self.seen.append(set(texts))
            model = super().train(texts, labels, classes=classes, seed=seed)
            outer = self

            class Wrapped:
                classes = model.classes

                def predict_proba(self, ts: Sequence[str], progress=None):  # type: ignore[no-untyped-def]
                    assert not set(ts) & outer.seen[-1]
                    return model.predict_proba(ts)

            return Wrapped()

    texts = [f"text number {i} {'good' if i % 2 else 'bad'}" for i in range(40)]
    labels = ["pos" if i % 2 else "neg" for i in range(40)]
    trainer = Recording()
    proba = out_of_fold_proba(trainer, texts, labels, ["neg", "pos"], folds=4, seed=0)
    assert proba.shape == (40, 2) and len(trainer.seen) == 4
    assert np.allclose(proba.sum(axis=1), 1.0)


def test_cleanlab_finds_planted_flips_on_separable_data() -> None:
    from connectors.quality import cleanlab_issues

    rng = np.random.default_rng(0)
    n = 400
    y_true = rng.integers(0, 3, size=n)
    proba = np.full((n, 3), 0.05)
    proba[np.arange(n), y_true] = 0.9
    given = y_true.copy()
    flipped = rng.choice(n, size=20, replace=False)
    given[flipped] = (y_true[flipped] + 1) % 3
    found = cleanlab_issues(given, proba)
    assert set(found.tolist()) == set(flipped.tolist())
    with pytest.raises(Exception, match="one probability row per label"):
        cleanlab_issues(given[:10], proba)
    assert cleanlab_issues(np.empty(0, dtype=int), np.empty((0, 3))).size == 0


def _store(tmp_path: Path):  # type: ignore[no-untyped-def]
    from connectors.store import SqlStore

    store = SqlStore.open(f"sqlite:///{tmp_path / 'q.db'}")
    good = ["a wonderful moving film", "great acting and a fine story", "superb and warm"]
    bad = ["a dull boring mess", "awful acting and a weak plot", "tedious and flat"]
    items, labels = [], {}
    for i in range(30):
        items.append(Item(f"p{i}", f"{good[i % 3]} number {i}", "train"))
        labels[f"p{i}"] = "pos"
        items.append(Item(f"n{i}", f"{bad[i % 3]} number {i}", "train"))
        labels[f"n{i}"] = "neg"
    labels["p7"] = "neg"  # a planted label error
    items += [
        Item("leak-train", "the same review appears twice here", "train"),
        Item("leak-test", "The same review  appears twice here", "test"),
        Item("dup-a", "identical text in the pool", "train"),
        Item("dup-b", "identical text in the pool", "train"),
        Item("short", "meh", "train"),
        Item("long", "word " * 40, "train"),
        Item("tie", "an item two annotators disagree on", "train"),
    ]
    labels.update({"leak-train": "pos", "leak-test": "pos", "dup-a": "pos", "dup-b": "neg"})
    store.add_items(items)
    store.add_labels(
        [Label(i, v, "import", f"import:{i}") for i, v in labels.items()]
        + [
            Label("tie", "pos", "label-studio", "a1", annotator="x"),
            Label("tie", "neg", "label-studio", "a2", annotator="y"),
        ]
    )
    return store


def _finder(labels: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """Self-confidence below 0.3, lowest first (a stand-in for cleanlab in a pure-logic test)."""
    conf = proba[np.arange(labels.size), labels]
    bad = np.flatnonzero(conf < 0.3)
    return bad[np.argsort(conf[bad])]


def test_check_project_finds_every_planted_problem(tmp_path: Path) -> None:
    store = _store(tmp_path)
    try:
        report = check_project(
            store,
            classes=["neg", "pos"],
            embed=lambda texts: np.stack([_vec(fold_text(t)) for t in texts]),
            count_tokens=lambda texts: np.asarray([len(t.split()) + 2 for t in texts]),
            max_tokens=32,
            trainer=BowTrainer(),
            find_issues=_finder,
            options=CheckOptions(near_threshold=0.99, folds=3, min_words=2),
            model_name="bow",
        )
    finally:
        store.close()
    f = {x["check"]: x for x in report["findings"]}
    assert [x["check"] for x in report["findings"]] == list(CHECKS)
    assert f["leak"]["severity"] == "error" and f["leak"]["count"] == 1
    assert f["leak"]["examples"][0]["item_id"] == "leak-train"
    assert f["leak"]["examples"][0]["held_out_item"] == "leak-test"
    assert f["conflicting-labels"]["count"] == 1
    assert f["conflicting-labels"]["examples"][0]["labels"] == {"dup-a": "pos", "dup-b": "neg"}
    # leak pair and dup pair are equal after folding: exact, not near
    assert f["exact-duplicates"]["count"] == 2
    assert f["near-duplicates"]["count"] == 0, f["near-duplicates"]
    assert f["annotator-ties"]["count"] == 1
    assert [e["item_id"] for e in f["too-short"]["examples"]] == ["short"]
    assert [e["item_id"] for e in f["over-length"]["examples"]] == ["long"]
    assert f["over-length"]["examples"][0]["tokens"] == 42
    assert "p7" in [e["item_id"] for e in f["label-errors"]["examples"]]
    suspect = next(e for e in f["label-errors"]["examples"] if e["item_id"] == "p7")
    assert suspect["given"] == "neg" and suspect["suggested"] == "pos"
    assert report["class_counts"] == {"neg": 32, "pos": 31}
    view = status_view(summary(report), report["label_revision"])
    assert view is not None and view["errors"] == ["leak", "conflicting-labels"]
    assert not view["stale"] and status_view(summary(report), -1)["stale"]  # type: ignore[index]


def test_check_without_embedder_still_finds_exact_leaks(tmp_path: Path) -> None:
    store = _store(tmp_path)
    try:
        report = check_project(
            store,
            classes=["neg", "pos"],
            embed=None,
            count_tokens=None,
            max_tokens=None,
            trainer=None,
            find_issues=None,
        )
    finally:
        store.close()
    f = {x["check"]: x for x in report["findings"]}
    assert f["leak"]["count"] == 1 and "equal texts only" in f["leak"]["message"]
    assert f["near-duplicates"]["severity"] == "skipped"
    assert f["over-length"]["severity"] == "skipped"
    assert f["label-errors"]["severity"] == "skipped"


def test_near_duplicates_beyond_the_exact_ones(tmp_path: Path) -> None:
    from connectors.store import SqlStore

    store = SqlStore.open(f"sqlite:///{tmp_path / 'n.db'}")
    store.add_items(
        [
            Item("a", "the film was good fun", "train"),
            Item("b", "the film was good fun!!", "train"),  # same words: same bag vector
            Item("c", "something else entirely", "train"),
        ]
    )
    try:
        report = check_project(
            store,
            classes=["neg", "pos"],
            embed=lambda texts: np.stack([_vec(t) for t in texts]),
            count_tokens=None,
            max_tokens=None,
            trainer=None,
            find_issues=None,
            options=CheckOptions(near_threshold=0.99),
        )
    finally:
        store.close()
    f = {x["check"]: x for x in report["findings"]}
    assert f["near-duplicates"]["count"] == 1
    assert f["near-duplicates"]["examples"][0]["item_id"] == "a"
    assert f["exact-duplicates"]["count"] == 0
    assert f["label-errors"]["severity"] == "skipped"
    assert "no training labels yet" in f["class-balance"]["message"]


@pytest.mark.parametrize(
    "kw", [{"near_threshold": 0.0}, {"near_threshold": 1.5}, {"folds": 1}, {"min_words": -1}]
)
def test_bad_options_get_a_clear_error(kw: dict) -> None:
    with pytest.raises(DataError):
        CheckOptions(**kw)


def test_review_requests_skip_items_already_answered_in_the_tool(tmp_path: Path) -> None:
    from loop.quality import review_requests

    store = _store(tmp_path)
    try:
        found = [
            {"item_id": "tie", "given": "pos", "p_given": 0.1},  # has label-studio answers
            {"item_id": "p7", "given": "neg", "p_given": 0.2},
            {"item_id": "gone", "given": "neg", "p_given": 0.3},
            {"item_id": "n3", "given": "neg", "p_given": 0.4},
        ]
        requests, passed = review_requests(store, found, limit=1)
        assert [(r.item.id, r.kind, r.prediction) for r in requests] == [("p7", "review", None)]
        assert requests[0].score == pytest.approx(0.8)
        assert passed == [("tie", "already answered in label-studio")]
        requests, passed = review_requests(store, found, limit=5)
        assert [r.item.id for r in requests] == ["p7", "n3"]
        assert ("gone", "no longer in the project") in passed
        with pytest.raises(DataError, match="--review"):
            review_requests(store, found, limit=0)
    finally:
        store.close()


def test_over_max_near_items_only_labeled_and_held_out_items_are_embedded(tmp_path: Path) -> None:
    store = _store(tmp_path)
    seen: list[int] = []

    def embed(texts):  # type: ignore[no-untyped-def]
        seen.append(len(texts))
        return np.stack([_vec(fold_text(t)) for t in texts])

    try:
        report = check_project(
            store,
            classes=["neg", "pos"],
            embed=embed,
            count_tokens=None,
            max_tokens=None,
            trainer=None,
            find_issues=None,
            options=CheckOptions(near_threshold=0.99, max_near_items=10),
        )
        unlabeled = len(store.pool())
    finally:
        store.close()
    f = {x["check"]: x for x in report["findings"]}
    # the training labels and the one test item; not the unlabeled items nor the tie
    assert seen == [report["training_labels"] + 1] and report["items"] - seen[0] > unlabeled
    assert (
        f["leak"]["count"] == 1
        and "labeled and held-out items only" in f["near-duplicates"]["message"]
    )

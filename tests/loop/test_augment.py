"""Easy data augmentation (loop.augment) and the WordNet lexicon it reads (connectors.data.lexicon)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from loop.augment import STOP_WORDS, Augmenter, AugmentingTrainer
from loop.errors import ConfigError
from tests.fakes import BowTrainer

LEX = {"film": ["movie", "picture"], "boring": ["dull", "tedious"], "funny": ["comic"]}


def test_each_operation_does_what_it_says() -> None:
    words = "the film was boring and the ending was funny".split()
    rng = np.random.default_rng(0)
    a = Augmenter(["synonym"], rate=0.3, copies=1, synonyms=LEX)
    out = a.synonym(words, rng)
    changed = [(w, o) for w, o in zip(words, out, strict=True) if w != o]
    assert changed and all(o in LEX[w] for w, o in changed)
    assert len(out) == len(words)
    ins = a.insert(words, rng)
    assert len(ins) == len(words) + 3  # round(0.3 * 9) insertions
    added = Counter(ins) - Counter(words)
    assert all(w in {s for v in LEX.values() for s in v} for w in added.elements())
    sw = a.swap(words, rng)
    assert sorted(sw) == sorted(words) and sw != words
    de = Augmenter(["delete"], rate=0.5, copies=1).delete(words, rng)
    assert 1 <= len(de) < len(words) and all(w in words for w in de)
    assert Augmenter(["delete"], rate=0.99, copies=1).delete(["a", "b"], rng)  # never empty


def test_punctuation_and_case_survive_and_stop_words_are_left_alone() -> None:
    a = Augmenter(["synonym"], rate=0.9, copies=1, synonyms={**LEX, "the": ["da"]})
    out = a.synonym(["The", "film,", "(boring)"], np.random.default_rng(1))
    assert out[0] == "The" and "the" in STOP_WORDS
    assert out[1] in ("movie,", "picture,") and out[2] in ("(dull)", "(tedious)")


def test_copies_are_deterministic_new_and_distinct() -> None:
    a = Augmenter(["synonym", "swap", "delete", "insert"], copies=4, synonyms=LEX)
    text = "a boring film with a funny side and a long dull middle part"
    one, two = a.augment(text, seed=3), a.augment(text, seed=3)
    assert one == two and len(set(one)) == len(one) and text not in one
    assert a.augment(text, seed=4) != one
    assert Augmenter(["synonym"], synonyms={}).augment("nothing to replace", 0) == []


def test_augmenting_trainer_adds_copies_with_their_labels_and_records_it() -> None:
    seen: dict[str, list[str]] = {}

    class Spy(BowTrainer):
        def train(self, texts, labels, *, classes, seed, progress=None):  # type: ignore[no-untyped-def,override]
            seen["texts"], seen["labels"] = list(texts), list(labels)
            return super().train(texts, labels, classes=classes, seed=seed)

    a = Augmenter(["synonym", "swap"], copies=2, synonyms=LEX)
    t = AugmentingTrainer(Spy(), a)
    texts = ["boring film indeed here", "funny show overall there"]  # no shared word
    model = t.train(texts, ["neg", "pos"], classes=["neg", "pos"], seed=0)
    assert seen["texts"][:2] == texts and len(seen["texts"]) == 6
    for text, label in zip(seen["texts"][2:], seen["labels"][2:], strict=True):
        origin = next(o for o in texts if sorted(set(o.split()) & set(text.split())))
        assert label == dict(zip(texts, ["neg", "pos"], strict=True))[origin]
    assert t.config()["augment"] == {"techniques": ["synonym", "swap"], "rate": 0.1, "copies": 2}
    assert t.name == Spy().name and model.predict_proba(["boring"]).shape == (1, 2)


@pytest.mark.parametrize(
    "kw",
    [
        {"techniques": []},
        {"techniques": ["shuffle"]},
        {"techniques": ["swap"], "rate": 0.0},
        {"techniques": ["swap"], "copies": 0},
        {"techniques": ["synonym"]},  # no lexicon
    ],
)
def test_bad_settings_get_a_clear_error(kw: dict) -> None:
    techniques = kw.pop("techniques")
    with pytest.raises(ConfigError):
        Augmenter(techniques, **kw)


def test_wordnet_lines_parse_into_synonym_sets() -> None:
    from connectors.data.lexicon import parse_synsets, synonym_index

    lines = [
        "  1 This software and database is being provided to you",
        "00001740 00 a 02 able 0 capable(p) 0 005 = 05200169 n 0000 | having the means",
        "01234567 05 n 03 film 0 movie 0 Motion_Picture 0 000 | a form of entertainment",
    ]
    synsets = parse_synsets(lines)
    assert synsets == [["able", "capable"], ["film", "movie", "Motion Picture"]]
    index = synonym_index(synsets)
    assert index["film"] == ["movie", "motion picture"] and index["capable"] == ["able"]


@pytest.mark.slow
def test_the_real_wordnet_lexicon_loads_offline_after_the_first_fetch(cache_dir: Path) -> None:
    from connectors.data.lexicon import load_synonyms

    syn = load_synonyms(cache_dir)
    assert len(syn) > 100_000
    assert "movie" in syn["film"] and "dull" in syn["boring"]
    assert (cache_dir / "lexicon" / "WORDNET-LICENSE").read_text().startswith("WordNet Release 3.0")
    assert load_synonyms(cache_dir) == syn  # from the cached index


def test_wiring_wraps_the_models_that_can_take_copies_and_refuses_the_others(
    tmp_path: Path,
) -> None:
    from loop.settings import Settings
    from loop.wiring import make_trainer

    s = Settings(home=tmp_path, model="embed-lr", augment={"techniques": ["swap"], "copies": 2})
    t = make_trainer(s)
    assert isinstance(t, AugmentingTrainer) and t.name == "embed-lr"
    assert t.embedder is t.inner.embedder  # the loop's embedding cache is the inner one's
    assert not isinstance(make_trainer(s, augment=False), AugmentingTrainer)
    assert not isinstance(make_trainer(s, "finetune"), AugmentingTrainer)  # another lane
    with pytest.raises(ConfigError, match="would leak"):
        make_trainer(Settings(home=tmp_path, model="finetune", augment={"techniques": ["swap"]}))
    assert not isinstance(make_trainer(Settings(home=tmp_path)), AugmentingTrainer)

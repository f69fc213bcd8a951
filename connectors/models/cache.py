"""On-disk embedding cache: each distinct text is embedded once per encoder fingerprint.

Layout: ``<cache_dir>/<fingerprint>/shard-<id>.vec.npy`` (``(n, dim)`` float32) and
``shard-<id>.keys.npy`` (``(n,)`` ``S32``: sha256 of the UTF-8 text). Shards are append-only and
each file is written to a ``.tmp-*`` name and renamed into place; the keys file is written last,
so a shard counts only once both files are complete. A crash leaves at most a stray ``.tmp-*``
or a vectors file without keys, both ignored. Shard ids hold the time, the process id and a
random part, so concurrent writers never touch the same file. Vectors are memory-mapped: opening
a cache with many shards reads only the keys.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from connectors.models._common import check_texts
from loop.errors import ModelError
from loop.progress import SILENT, Progress

log = logging.getLogger(__name__)

KEY_DTYPE = np.dtype("S32")
_KEYS_SUFFIX = ".keys.npy"
_VEC_SUFFIX = ".vec.npy"


def text_keys(texts: Sequence[str]) -> np.ndarray:
    """``(n,)`` ``S32``: the sha256 digest of each text's UTF-8 bytes."""
    return np.array([hashlib.sha256(t.encode("utf-8")).digest() for t in texts], dtype=KEY_DTYPE)


def _save_npy_atomic(path: Path, array: np.ndarray) -> None:
    tmp = path.parent / f".tmp-{uuid.uuid4().hex}.npy"
    try:
        with tmp.open("wb") as f:
            np.save(f, array, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class EmbeddingCache:
    """Vectors keyed by text digest, for one encoder fingerprint.

    ``lookup(keys)`` gives the cached rows; ``add(keys, vectors)`` appends one shard. Shards
    written by other processes are picked up on the next ``lookup``.
    """

    def __init__(
        self, cache_dir: str | os.PathLike[str], fingerprint: str, *, max_shards: int = 64
    ):
        if not fingerprint or "/" in fingerprint or fingerprint.startswith("."):
            raise ModelError(
                f"expected an encoder fingerprint usable as a folder name, found {fingerprint!r}.",
                "give the embedder a hex fingerprint.",
            )
        self.dir = Path(cache_dir) / fingerprint
        self.fingerprint = fingerprint
        self.max_shards = max_shards
        self._shards: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # id -> (keys, vectors)
        self._index: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # keys, shard, row
        self._order: list[str] = []

    # -- reading -------------------------------------------------------------------------
    def _shard_ids(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        names = (p.name for p in self.dir.iterdir())
        return sorted(
            n[: -len(_KEYS_SUFFIX)]
            for n in names
            if n.startswith("shard-") and n.endswith(_KEYS_SUFFIX)
        )

    def _load_shard(self, shard_id: str) -> tuple[np.ndarray, np.ndarray] | None:
        keys_path = self.dir / f"{shard_id}{_KEYS_SUFFIX}"
        vec_path = self.dir / f"{shard_id}{_VEC_SUFFIX}"
        try:
            keys = np.load(keys_path, allow_pickle=False)
            vectors = np.load(vec_path, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            return None  # removed by a concurrent compaction: its rows live in the merged shard
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable embedding cache shard %s: %s", keys_path, exc)
            return None
        if (
            keys.dtype != KEY_DTYPE
            or keys.ndim != 1
            or vectors.ndim != 2
            or vectors.dtype != np.float32
            or vectors.shape[0] != keys.shape[0]
        ):
            log.warning(
                "ignoring embedding cache shard %s: keys %s %s, vectors %s %s do not match",
                keys_path, keys.dtype, keys.shape, vectors.dtype, vectors.shape,
            )  # fmt: skip
            return None
        return keys, vectors

    def refresh(self) -> int:
        """Open shards written since the last call (by any process); returns how many."""
        new = [s for s in self._shard_ids() if s not in self._shards]
        opened = 0
        for shard_id in new:
            shard = self._load_shard(shard_id)
            if shard is not None:
                self._shards[shard_id] = shard
                opened += 1
        if opened:
            self._index = None
        return opened

    def _build_index(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._index is None:
            self._order = list(self._shards)
            parts = [self._shards[s][0] for s in self._order]
            if parts:
                keys = np.concatenate(parts)
                shard = np.concatenate(
                    [np.full(len(p), i, dtype=np.int32) for i, p in enumerate(parts)]
                )
                row = np.concatenate([np.arange(len(p), dtype=np.int64) for p in parts])
                order = np.argsort(keys, kind="stable")
                self._index = (keys[order], shard[order], row[order])
            else:
                empty = np.zeros(0, dtype=KEY_DTYPE)
                self._index = (empty, np.zeros(0, np.int32), np.zeros(0, np.int64))
        return self._index

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """``(vectors, found)``: ``vectors`` ``(len(keys), dim)`` float32 with the cached rows
        (zeros where ``found`` is False), or None when nothing was found."""
        self.refresh()
        sorted_keys, shard, row = self._build_index()
        found = np.zeros(len(keys), dtype=bool)
        if len(sorted_keys) == 0 or len(keys) == 0:
            return None, found
        pos = np.searchsorted(sorted_keys, keys)
        pos_clipped = np.minimum(pos, len(sorted_keys) - 1)
        found = sorted_keys[pos_clipped] == keys
        if not found.any():
            return None, found
        dim = self._shards[self._order[0]][1].shape[1]
        out = np.zeros((len(keys), dim), dtype=np.float32)
        hit = np.flatnonzero(found)
        hit_shard = shard[pos_clipped[hit]]
        hit_row = row[pos_clipped[hit]]
        for s in np.unique(hit_shard):
            sel = hit_shard == s
            out[hit[sel]] = self._shards[self._order[s]][1][hit_row[sel]]
        return out, found

    def __len__(self) -> int:
        """Distinct texts cached (as of the last refresh)."""
        sorted_keys = self._build_index()[0]
        return int(len(np.unique(sorted_keys))) if len(sorted_keys) else 0

    # -- writing -------------------------------------------------------------------------
    def add(self, keys: np.ndarray, vectors: np.ndarray) -> str | None:
        """Append one shard; returns its id (None when ``keys`` is empty)."""
        keys = np.asarray(keys, dtype=KEY_DTYPE)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != keys.shape[0] or keys.ndim != 1:
            raise ModelError(
                f"expected keys (n,) and vectors (n, dim), found {keys.shape} and {vectors.shape}.",
                "pass one vector per key.",
            )
        if len(keys) == 0:
            return None
        shard_id = self._write_shard(keys, vectors)
        if len(self._shard_ids()) > self.max_shards:
            self.compact()
        return shard_id

    def compact(self) -> int:
        """Merge every shard into one (distinct keys only); returns how many were merged.

        The merged shard is complete before any old one is removed, so a concurrent reader
        sees every row either in the old shards or in the merged one.
        """
        self.refresh()
        ids = [s for s in self._shard_ids() if s in self._shards]
        if len(ids) < 2:
            return 0
        keys = np.concatenate([self._shards[s][0] for s in ids])
        vectors = np.concatenate([np.asarray(self._shards[s][1]) for s in ids])
        _, first = np.unique(keys, return_index=True)
        first.sort()
        merged = self._write_shard(keys[first], vectors[first])
        for s in ids:
            for suffix in (_KEYS_SUFFIX, _VEC_SUFFIX):  # keys first: the shard stops counting
                (self.dir / f"{s}{suffix}").unlink(missing_ok=True)
            self._shards.pop(s, None)
        self._index = None
        log.debug("compacted %d embedding cache shards into %s", len(ids), merged)
        return len(ids)

    def _write_shard(self, keys: np.ndarray, vectors: np.ndarray) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        shard_id = f"shard-{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        _save_npy_atomic(self.dir / f"{shard_id}{_VEC_SUFFIX}", vectors)
        _save_npy_atomic(self.dir / f"{shard_id}{_KEYS_SUFFIX}", keys)  # last: commits the shard
        self._shards[shard_id] = (keys, vectors)
        self._index = None
        return shard_id


class _Forward:
    """A Progress whose tasks all advance one outer task."""

    def __init__(self, advance: Callable[[int], None]):
        self._advance = advance

    @contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
        yield self._advance


class CachedEmbedder:
    """Wraps an embedder (anything with ``embed`` and a ``fingerprint``) and embeds only texts
    not in the cache; new vectors are written every ``write_every`` texts, so an interrupted
    run keeps what it computed.

    ``hits`` / ``misses`` count distinct texts over the life of the object.
    """

    def __init__(
        self,
        embedder: Any,
        cache_dir: str | os.PathLike[str],
        *,
        write_every: int = 4096,
        max_shards: int = 64,
    ):
        fingerprint = getattr(embedder, "fingerprint", None)
        if not isinstance(fingerprint, str):
            raise ModelError(
                f"expected an embedder with a str fingerprint, found {type(embedder).__name__} "
                "without one.",
                "give the embedder a `fingerprint` property that changes when its vectors would.",
            )
        if write_every < 1:
            raise ModelError(f"expected write_every >= 1, found {write_every}.", "use e.g. 4096.")
        self.embedder = embedder
        self.cache = EmbeddingCache(cache_dir, fingerprint, max_shards=max_shards)
        self.write_every = write_every
        self.hits = 0
        self.misses = 0

    @property
    def fingerprint(self) -> str:
        return self.cache.fingerprint

    @property
    def dim(self) -> int:
        return int(self.embedder.dim)

    def config(self) -> Mapping[str, Any]:
        inner = self.embedder.config() if hasattr(self.embedder, "config") else {}
        return {**inner, "fingerprint": self.fingerprint, "cache": str(self.cache.dir)}

    def embed(self, texts: Sequence[str], progress: Progress = SILENT) -> np.ndarray:
        """``(len(texts), dim)`` float32, L2-normalised rows (as the wrapped embedder)."""
        texts = check_texts(texts)
        if not texts:
            return self.embedder.embed([], progress=progress)
        keys = text_keys(texts)
        uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        vectors, found = self.cache.lookup(uniq)
        missing = np.flatnonzero(~found)
        self.hits += int(found.sum())
        self.misses += len(missing)
        if len(missing):
            # longest first, so each written chunk pads little when the embedder batches it
            lengths = np.array([len(texts[first[i]]) for i in missing])
            missing = missing[np.argsort(-lengths, kind="stable")]
            with progress.task("embedding", total=len(missing)) as advance:
                forward = _Forward(advance)
                for start in range(0, len(missing), self.write_every):
                    part = missing[start : start + self.write_every]
                    new = np.asarray(
                        self.embedder.embed([texts[first[i]] for i in part], progress=forward),
                        dtype=np.float32,
                    )
                    if new.shape[0] != len(part) or new.ndim != 2:
                        raise ModelError(
                            f"expected the embedder to return ({len(part)}, dim), found {new.shape}.",
                            "fix the wrapped embedder's embed().",
                        )
                    if vectors is None:
                        vectors = np.zeros((len(uniq), new.shape[1]), dtype=np.float32)
                    vectors[part] = new
                    self.cache.add(uniq[part], new)
        assert vectors is not None  # every distinct text was found or embedded
        return vectors[inverse.reshape(-1)]

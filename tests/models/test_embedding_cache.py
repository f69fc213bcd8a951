"""The on-disk embedding cache: hits and misses, persistence, crash safety, concurrent writers."""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from connectors.models.cache import CachedEmbedder, EmbeddingCache, text_keys
from loop.contracts import Embedder
from loop.errors import ModelError
from loop.progress import SILENT, Progress
from tests.models.models_testdata import NEGATIVE, POSITIVE, RecordingProgress

DIM = 8


class CountingEmbedder:
    """Deterministic vectors derived from each text's hash; records every text it embeds."""

    def __init__(self, fingerprint: str = "f" * 32, fail_after: int | None = None):
        self.fingerprint = fingerprint
        self.dim = DIM
        self.calls: list[list[str]] = []
        self.fail_after = fail_after

    def embed(self, texts: Sequence[str], progress: Progress = SILENT) -> np.ndarray:
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise RuntimeError("interrupted")
        self.calls.append(list(texts))
        with progress.task("embedding", total=len(texts)) as advance:
            rows = [self.vector(t) for t in texts]
            advance(len(texts))
        return np.array(rows, dtype=np.float32).reshape(len(texts), DIM)

    @staticmethod
    def vector(text: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
        return v / np.linalg.norm(v)

    @property
    def embedded(self) -> list[str]:
        return [t for call in self.calls for t in call]


def expected(texts: Sequence[str]) -> np.ndarray:
    return np.array([CountingEmbedder.vector(t) for t in texts], dtype=np.float32)


def shard_files(cache: CachedEmbedder) -> list[str]:
    return sorted(p.name for p in cache.cache.dir.iterdir())


def test_each_distinct_text_is_embedded_once(tmp_path: Path) -> None:
    inner = CountingEmbedder()
    cached = CachedEmbedder(inner, tmp_path)
    assert isinstance(cached, Embedder)
    texts = ["a", "b", "a", "c", "b", "d"]
    out = cached.embed(texts)
    np.testing.assert_array_equal(out, expected(texts))
    assert sorted(inner.embedded) == ["a", "b", "c", "d"]
    assert (cached.hits, cached.misses) == (0, 4)

    out2 = cached.embed(["d", "e", "a"])
    np.testing.assert_array_equal(out2, expected(["d", "e", "a"]))
    assert inner.calls[-1] == ["e"]
    assert (cached.hits, cached.misses) == (2, 5)


def test_all_hits_do_not_call_the_embedder(tmp_path: Path) -> None:
    inner = CountingEmbedder()
    CachedEmbedder(inner, tmp_path).embed(POSITIVE)
    calls = len(inner.calls)
    again = CachedEmbedder(inner, tmp_path)  # a new process would start like this
    np.testing.assert_array_equal(again.embed(POSITIVE[::-1]), expected(POSITIVE[::-1]))
    assert len(inner.calls) == calls
    assert (again.hits, again.misses) == (len(POSITIVE), 0)


def test_empty_and_bad_input(tmp_path: Path) -> None:
    cached = CachedEmbedder(CountingEmbedder(), tmp_path)
    assert cached.embed([]).shape == (0, DIM)
    with pytest.raises(ModelError, match="bytes at position 0"):
        cached.embed([b"raw"])  # type: ignore[list-item]


def test_fingerprint_change_is_a_miss(tmp_path: Path) -> None:
    CachedEmbedder(CountingEmbedder("a" * 32), tmp_path).embed(NEGATIVE)
    other = CountingEmbedder("b" * 32)
    cached = CachedEmbedder(other, tmp_path)
    cached.embed(NEGATIVE)
    assert (cached.hits, cached.misses) == (0, len(NEGATIVE))
    assert sorted(other.embedded) == sorted(NEGATIVE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a" * 32, "b" * 32]


def test_embedder_without_fingerprint_is_refused(tmp_path: Path) -> None:
    class Bare:
        def embed(self, texts, progress=SILENT):
            return np.zeros((len(texts), DIM), np.float32)

    with pytest.raises(ModelError, match="fingerprint"):
        CachedEmbedder(Bare(), tmp_path)


def test_stray_temp_and_half_written_shards_are_ignored(tmp_path: Path) -> None:
    cached = CachedEmbedder(CountingEmbedder(), tmp_path)
    cached.embed(["x", "y"])
    d = cached.cache.dir
    (d / ".tmp-0123abcd.npy").write_bytes(b"\x93NUMPY half written")
    # a crash between the two renames: vectors without keys
    np.save(d / "shard-00000000000000000001-1-deadbeef.vec.npy", np.ones((3, DIM), np.float32))
    fresh = CachedEmbedder(CountingEmbedder(), tmp_path)
    np.testing.assert_array_equal(fresh.embed(["x", "y", "z"]), expected(["x", "y", "z"]))
    assert (fresh.hits, fresh.misses) == (2, 1)


def test_unreadable_shard_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cached = CachedEmbedder(CountingEmbedder(), tmp_path)
    cached.embed(["x"])
    cached.embed(["y"])
    keys_files = sorted(cached.cache.dir.glob("shard-*.keys.npy"))
    keys_files[0].write_bytes(b"garbage")
    fresh = CachedEmbedder(CountingEmbedder(), tmp_path)
    with caplog.at_level(logging.WARNING, logger="connectors.models.cache"):
        out = fresh.embed(["x", "y"])
    np.testing.assert_array_equal(out, expected(["x", "y"]))
    assert (fresh.hits, fresh.misses) == (1, 1)
    assert "ignoring unreadable embedding cache shard" in caplog.text


def test_interrupted_run_keeps_what_it_computed(tmp_path: Path) -> None:
    texts = [f"text number {i}" for i in range(10)]
    failing = CountingEmbedder(fail_after=2)
    with pytest.raises(RuntimeError, match="interrupted"):
        CachedEmbedder(failing, tmp_path, write_every=3).embed(texts)
    resumed = CountingEmbedder()
    cached = CachedEmbedder(resumed, tmp_path, write_every=3)
    np.testing.assert_array_equal(cached.embed(texts), expected(texts))
    assert (cached.hits, cached.misses) == (6, 4)
    assert sorted(resumed.embedded) == sorted(set(texts) - set(failing.embedded))


def test_progress_counts_misses_once(tmp_path: Path) -> None:
    cached = CachedEmbedder(CountingEmbedder(), tmp_path, write_every=2)
    cached.embed(["a", "b"])
    progress = RecordingProgress()
    cached.embed(["a", "b", "c", "d", "e", "c"], progress=progress)
    assert progress.tasks == [{"description": "embedding", "total": 3, "done": 3}]


def test_many_shards_are_compacted(tmp_path: Path) -> None:
    texts = [f"t{i}" for i in range(20)]
    cached = CachedEmbedder(CountingEmbedder(), tmp_path, write_every=1, max_shards=4)
    cached.embed(texts)
    assert len(list(cached.cache.dir.glob("shard-*.keys.npy"))) <= 4
    assert not list(cached.cache.dir.glob(".tmp-*"))
    fresh = CachedEmbedder(CountingEmbedder(), tmp_path)
    np.testing.assert_array_equal(fresh.embed(texts), expected(texts))
    assert fresh.misses == 0
    assert len(fresh.cache) == 20


def _writer(cache_dir: str, texts: list[str], barrier) -> None:
    barrier.wait()
    CachedEmbedder(CountingEmbedder(), cache_dir, write_every=1, max_shards=8).embed(texts)


def test_two_processes_writing_at_once(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(2)
    a = [f"shared {i}" for i in range(30)] + [f"a {i}" for i in range(30)]
    b = [f"shared {i}" for i in range(30)] + [f"b {i}" for i in range(30)]
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), t, barrier)) for t in (a, b)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0]
    union = sorted(set(a) | set(b))
    reader = CachedEmbedder(CountingEmbedder(), tmp_path)
    np.testing.assert_array_equal(reader.embed(union), expected(union))
    assert reader.misses == 0


def test_real_encoder_through_the_cache(minilm, shared_cache_dir: Path) -> None:
    texts = POSITIVE[:5] + NEGATIVE[:5]
    cached = CachedEmbedder(minilm, shared_cache_dir)
    first = cached.embed(texts)
    np.testing.assert_allclose(first, minilm.embed(texts), atol=1e-6)
    again = CachedEmbedder(minilm, shared_cache_dir).embed(texts)
    np.testing.assert_array_equal(again, first)


def test_cache_validates_what_it_stores(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path, "c" * 32)
    with pytest.raises(ModelError, match="one vector per key"):
        cache.add(text_keys(["a", "b"]), np.zeros((3, DIM), np.float32))
    with pytest.raises(ModelError, match="folder name"):
        EmbeddingCache(tmp_path, "../escape")

"""The MiniLM embedder: shapes, normalisation, order, padding invariance, truncation, meaning."""

from __future__ import annotations

import numpy as np
import pytest

from connectors.models.encoder import MiniLMEmbedder
from loop.contracts import Embedder
from loop.errors import ModelError
from tests.models.models_testdata import NEGATIVE, POSITIVE, TOPICS, RecordingProgress

MIXED = POSITIVE[:6] + ["ok", "", "A much longer sentence " * 6] + TOPICS["food"][:4]


def test_shape_dtype_and_unit_rows(minilm: MiniLMEmbedder) -> None:
    assert isinstance(minilm, Embedder)
    x = minilm.embed(MIXED)
    assert x.shape == (len(MIXED), 384) == (len(MIXED), minilm.dim)
    assert x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


def test_rows_do_not_depend_on_batching_sorting_or_neighbours(minilm: MiniLMEmbedder) -> None:
    reference = minilm.embed(MIXED)
    other = MiniLMEmbedder(batch_size=3, sort_by_length=False)
    np.testing.assert_allclose(other.embed(MIXED), reference, atol=1e-5)
    perm = np.random.default_rng(1).permutation(len(MIXED))
    np.testing.assert_allclose(minilm.embed([MIXED[i] for i in perm]), reference[perm], atol=1e-5)
    np.testing.assert_allclose(minilm.embed(MIXED[2:3]), reference[2:3], atol=1e-5)


def test_max_length_truncates(minilm: MiniLMEmbedder) -> None:
    words = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen"
    long_text = words + " fifteen sixteen seventeen and many more words after that"
    short = MiniLMEmbedder(max_length=16)  # 14 word pieces + [CLS] + [SEP]
    a, b = short.embed([long_text, words])
    np.testing.assert_allclose(a, b, atol=1e-5)
    full = minilm.embed([long_text, words])
    assert float(full[0] @ full[1]) < 0.999


def test_similar_sentences_are_closer(minilm: MiniLMEmbedder) -> None:
    x = minilm.embed(
        ["The cat sat on the mat.", "A cat was sitting on a rug.", "Stock markets fell sharply."]
    )
    assert x[0] @ x[1] > x[0] @ x[2] + 0.2
    # topics cluster: mean within-topic similarity beats between-topic similarity
    sports, food = minilm.embed(TOPICS["sports"]), minilm.embed(TOPICS["food"])
    within = (sports @ sports.T)[np.triu_indices(len(sports), 1)].mean()
    assert within > (sports @ food.T).mean() + 0.1


def test_matches_sentence_transformers(minilm: MiniLMEmbedder) -> None:
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(str(minilm.model_path), device="cpu", local_files_only=True)
    model.max_seq_length = minilm.max_length
    texts = POSITIVE[:4] + NEGATIVE[:4]
    expected = model.encode(texts, batch_size=4, normalize_embeddings=True)
    np.testing.assert_allclose(minilm.embed(texts), expected, atol=1e-5)


def test_empty_input_and_bad_types(minilm: MiniLMEmbedder) -> None:
    assert minilm.embed([]).shape == (0, 384)
    with pytest.raises(ModelError, match="int at position 1"):
        minilm.embed(["fine", 3])  # type: ignore[list-item]


def test_progress_counts_every_text(minilm: MiniLMEmbedder) -> None:
    progress = RecordingProgress()
    minilm.embed(MIXED, progress=progress)
    assert progress.tasks == [{"description": "embedding", "total": len(MIXED), "done": len(MIXED)}]


def test_fingerprint_tracks_what_changes_the_vectors(minilm: MiniLMEmbedder) -> None:
    same = MiniLMEmbedder(batch_size=7)
    assert same.fingerprint == minilm.fingerprint  # batch size does not change the vectors
    assert MiniLMEmbedder(max_length=64).fingerprint != minilm.fingerprint


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ModelError, match="max_length > 0"):
        MiniLMEmbedder(max_length=0)
    with pytest.raises(ModelError, match="batch_size > 0"):
        MiniLMEmbedder(batch_size=-1)

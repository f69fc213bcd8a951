"""Shared test set-up.

- ``ALLOOP_CACHE_DIR`` (set by deploy/test.sh) lets real-data and real-model tests reuse
  fetched datasets and embeddings across runs.
- Hub downloads are switched off for the whole test session: everything must work offline.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# one real Label Studio per test session, shared by every folder that needs it
pytest_plugins = ["tests.labelstudio.fixtures"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache for datasets and embeddings shared by the whole session (persistent when
    ALLOOP_CACHE_DIR is set)."""
    env = os.environ.get("ALLOOP_CACHE_DIR")
    if env:
        p = Path(env)
        p.mkdir(parents=True, exist_ok=True)
        return p
    return tmp_path_factory.mktemp("cache")

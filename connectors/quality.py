"""The library parts of ``alloop check``: cleanlab's confident learning and the encoder's
tokenizer (for the over-length check). The checks themselves are in :mod:`loop.quality`."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from loop.errors import ModelError


def cleanlab_issues(labels: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """Indices of likely label errors, most likely first: ``cleanlab.filter.find_label_issues``
    with the default ``prune_by_noise_rate`` filter, ranked by self-confidence (the
    out-of-fold probability of the given label, lowest first)."""
    from cleanlab.filter import find_label_issues

    labels = np.asarray(labels, dtype=np.intp)
    pred_probs = np.asarray(pred_probs, dtype=np.float64)
    if labels.shape[0] != pred_probs.shape[0]:
        raise ModelError(
            f"expected one probability row per label, found {pred_probs.shape[0]} rows for "
            f"{labels.shape[0]} labels",
            "pass out-of-fold probabilities of the same items.",
        )
    if labels.shape[0] == 0:
        return np.empty(0, dtype=np.intp)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cleanlab warns on tiny classes; the report says so
        ranked: Any = find_label_issues(
            labels,
            pred_probs,
            return_indices_ranked_by="self_confidence",
            n_jobs=1,
        )
    return np.asarray(ranked, dtype=np.intp)


class TokenCounter:
    """Tokens per text as the encoder sees them (special tokens included), untruncated."""

    def __init__(self, model_path: str | os.PathLike[str] | None = None) -> None:
        from connectors.models._common import resolve_model_path

        self.model_path = resolve_model_path(model_path)
        self._tokenizer: Any = None

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            from connectors.models._common import quiet_transformers

            with quiet_transformers():
                self._tokenizer = AutoTokenizer.from_pretrained(
                    self.model_path, local_files_only=True
                )
        out = np.zeros(len(texts), dtype=np.int64)
        chunk = 4096
        for start in range(0, len(texts), chunk):
            enc = self._tokenizer(
                list(texts[start : start + chunk]),
                add_special_tokens=True,
                truncation=False,
                verbose=False,
            )["input_ids"]
            out[start : start + len(enc)] = [len(ids) for ids in enc]
        return out

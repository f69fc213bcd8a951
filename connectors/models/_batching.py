"""Tokenise once, pad per batch, optionally in order of length (imports torch)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

# texts tokenised at once; sorting by length happens within a chunk (bounds memory on big pools)
CHUNK_SIZE = 8192


def pad_batch(ids: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Token id lists → ``input_ids``/``attention_mask`` ``(b, longest)`` int64 tensors."""
    longest = max(len(x) for x in ids)
    input_ids = np.full((len(ids), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), longest), dtype=np.int64)
    for i, x in enumerate(ids):
        input_ids[i, : len(x)] = x
        mask[i, : len(x)] = 1
    return {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask)}


def tokenize(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids per text, truncated to ``max_length`` (special tokens included), unpadded."""
    enc = tokenizer(
        list(texts),
        truncation=True,
        max_length=max_length,
        padding=False,
        return_attention_mask=False,
        return_token_type_ids=False,
    )
    return enc["input_ids"]


def batches(
    tokenizer: Any,
    texts: Sequence[str],
    *,
    max_length: int,
    batch_size: int,
    sort_by_length: bool = True,
    chunk_size: int = CHUNK_SIZE,
) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor]]]:
    """Yield ``(positions, tensors)``: ``positions`` are indices into ``texts`` of the batch rows.

    With ``sort_by_length`` the texts of each chunk are batched longest first, so a batch pads
    to about its own length (less padding, faster on CPU); the caller puts rows back with
    ``positions``.
    """
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for start in range(0, len(texts), chunk_size):
        chunk = texts[start : start + chunk_size]
        ids = tokenize(tokenizer, chunk, max_length)
        if sort_by_length:
            lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
            order = np.argsort(-lengths, kind="stable")
        else:
            order = np.arange(len(ids))
        for b in range(0, len(order), batch_size):
            rows = order[b : b + batch_size]
            yield start + rows, pad_batch([ids[i] for i in rows], pad_id)

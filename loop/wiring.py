"""Builds the parts from settings. The only module of ``loop`` that imports ``connectors``
(lazily, inside functions, so ``import loop.wiring`` stays cheap)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loop.errors import ConfigError, DataError
from loop.progress import SILENT, Progress
from loop.records import Label
from loop.settings import Settings

if TYPE_CHECKING:
    from loop.contracts import Embedder, Store, Trainer


def open_store(settings: Settings, url: str | None = None) -> Store:
    from connectors.store import SqlStore

    return SqlStore.open(url or settings.db_url, max_text_chars=settings.text.max_chars)


def trainer_params(settings: Settings, model: str | None = None) -> dict[str, Any]:
    """The settings section of ``model`` (default: ``settings.model``) as trainer keywords."""
    model = model or settings.model
    if model == "embed-lr":
        return settings.embed_lr.model_dump()
    if model == "tfidf-lr":
        return settings.tfidf_lr.model_dump()
    if model == "setfit":
        return settings.setfit.model_dump()
    if model == "ladder":
        return {
            **settings.ladder.model_dump(),
            "tfidf_lr": settings.tfidf_lr.model_dump(),
            "embed_lr": settings.embed_lr.model_dump(),
            "finetune": settings.finetune.trainer_params(),
            "setfit": settings.setfit.model_dump(),
        }
    return settings.finetune.trainer_params()


#: models whose training can take augmented copies (finetune and ladder hold out part of the
#: labels inside training: copies of a held-out text would leak into their training part)
AUGMENTABLE = ("embed-lr", "tfidf-lr", "setfit")
#: models cheap enough to train ``ensemble.members`` times per retrain
BAGGABLE = ("embed-lr", "tfidf-lr")


def make_trainer(
    settings: Settings, model: str | None = None, *, augment: bool = True, ensemble: bool = True
) -> Trainer:
    """The trainer of ``model`` (default: ``settings.model``) with its settings, wrapped in
    :class:`loop.augment.AugmentingTrainer` when ``augment.techniques`` names any (and
    ``augment``). Raises ConfigError when augmentation is asked of the project's model and that
    model cannot take it; another lane's model (``slow_model``) is then trained unaugmented.
    For the project's model (and ``ensemble``), ``ensemble.kind`` makes it a bagging ensemble,
    or replaces it by the stack of ``ensemble.rungs``."""
    primary = ensemble and (model is None or model == settings.model)
    model = model or settings.model
    ens = settings.ensemble
    if primary and ens.kind == "stacking":
        from connectors.models.ensemble import StackingTrainer

        bases = [_single_trainer(settings, rung, augment=augment) for rung in ens.rungs]
        return StackingTrainer(bases, folds=ens.folds)
    trainer = _single_trainer(settings, model, augment=augment)
    if primary and ens.kind == "bagging":
        if model not in BAGGABLE:
            raise ConfigError(
                f"ensemble.kind = bagging trains the model {ens.members} times per retrain; "
                f"model = {model!r} is too slow for that (or holds out labels inside training)",
                f"use model = one of {list(BAGGABLE)}, or ensemble.kind = none.",
            )
        from connectors.models.ensemble import BaggingTrainer

        return BaggingTrainer(trainer, members=ens.members)
    return trainer


def _single_trainer(settings: Settings, model: str, *, augment: bool) -> Trainer:
    from connectors.models import make_trainer as _make

    trainer = _make(
        model,
        cache_dir=settings.cache / "embeddings",
        model_path=settings.model_path,
        **trainer_params(settings, model),
    )
    if settings.input.template != "{text}":
        from loop.template import TemplateTrainer

        trainer = TemplateTrainer(trainer, settings.input.template)
    if not (augment and settings.augment.techniques):
        return trainer
    if model not in AUGMENTABLE:
        if model == settings.model:
            raise ConfigError(
                f"augment.techniques is set, but model = {model!r} holds out part of the labels "
                "inside training, where augmented copies would leak",
                f"use model = one of {list(AUGMENTABLE)}, or clear augment.techniques.",
            )
        return trainer
    from loop.augment import AugmentingTrainer

    return AugmentingTrainer(trainer, make_augmenter(settings))


def make_augmenter(settings: Settings, progress: Progress = SILENT) -> Any:
    """The EDA augmenter of ``settings.augment`` (WordNet 3.0 loaded from the cache when a
    technique needs synonyms)."""
    from loop.augment import Augmenter

    a = settings.augment
    synonyms = None
    if {"synonym", "insert"} & set(a.techniques):
        from connectors.data.lexicon import load_synonyms

        synonyms = load_synonyms(settings.cache, progress)
    return Augmenter(a.techniques, rate=a.rate, copies=a.copies, synonyms=synonyms)


def make_embedder(settings: Settings) -> Embedder:
    from connectors.models import make_embedder as _make

    return _make(
        settings.cache / "embeddings",
        model_path=settings.model_path,
        batch_size=settings.embed_lr.batch_size,
        max_length=settings.embed_lr.max_length,
    )


def load_dataset(name_or_path: str, settings: Settings, progress: Progress = SILENT):
    """A built-in dataset by name, or a labeled CSV/JSONL file by path."""
    from connectors.data import datasets

    rule = settings.text.model_dump()  # max_chars, control_chars
    if name_or_path in datasets.DATASETS:
        return datasets.load(name_or_path, settings.cache, progress=progress, **rule)
    path = Path(name_or_path)
    if path.exists():
        return datasets.load_file_dataset(path, **rule)
    raise DataError(
        f"--dataset {name_or_path!r} is neither a built-in dataset ({', '.join(sorted(datasets.DATASETS))}) "
        "nor an existing file.",
        "pass a built-in name or the path of a labeled CSV/JSONL file.",
    )


def project_classes(settings: Settings, store: Store) -> list[str]:
    """The class list: the setting when given, else what ingest recorded in the store."""
    if settings.classes:
        return list(settings.classes)
    classes = store.get_meta("classes")
    if not classes or len(classes) < 2:
        raise ConfigError(
            f"the project has no class list yet (found {classes!r}).",
            'ingest labeled data (alloop ingest FILE with a label column) or set ALLOOP_CLASSES=\'["a","b"]\'.',
        )
    return list(classes)


def import_labels(gold: dict[str, str]) -> list[Label]:
    return [
        Label(item_id=i, value=v, source="import", annotation_id=f"import:{i}")
        for i, v in gold.items()
    ]


class LabelStudioHandle:
    """Where the Label Studio is: a URL and token, and the local server when we started it."""

    def __init__(
        self, url: str, token: str, server: Any = None, credentials_file: Path | None = None
    ) -> None:
        self.url = url
        self.token = token
        self.server = server
        self.credentials_file = credentials_file

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


def label_studio(
    settings: Settings, say: Any = print, progress: Progress = SILENT
) -> LabelStudioHandle:
    """The configured Label Studio (``label_studio.url`` + token), or a local one installed into
    ``<home>/labelstudio/venv`` and started on loopback (idempotent: a running one is reused).
    ``progress`` follows the install and the start."""
    ls = settings.label_studio
    if ls.url:
        if not ls.token:
            raise ConfigError(
                f"label_studio.url is set ({ls.url}) but no token.",
                "set ALLOOP_LABEL_STUDIO__TOKEN to an API token of that server.",
            )
        return LabelStudioHandle(ls.url, ls.token)
    from connectors.labelstudio import server as lss

    venv = ls.venv or settings.home / "labelstudio" / "venv"
    if lss.installed_version(venv) != lss.LS_VERSION:
        say(f"installing Label Studio {lss.LS_VERSION} into {venv} (about a minute, once)")
    lss.install(venv, progress=progress)
    data = settings.home / "labelstudio" / "data"
    server = lss.LocalLabelStudio(venv, data, ls.port, ls.username, token=ls.token)
    if not (data / "label_studio.sqlite3").exists():
        say("starting Label Studio for the first time (database migrations: ~40 s, once)")
    server.start(progress=progress)
    return LabelStudioHandle(server.url, server.token, server, server.credentials_file)


def make_labelstudio_tool(
    settings: Settings,
    handle: LabelStudioHandle,
    classes: list[str],
    project_title: str | None = None,
) -> Any:
    from connectors.labelstudio.tool import LabelStudioTool

    tool = LabelStudioTool(
        handle.url,
        handle.token,
        project_title=project_title or settings.label_studio.project_title,
        classes=tuple(classes),
    )
    tool.ensure_project()
    return tool


def embedder_for(
    settings: Settings, trainer: Any, strategy_names: Sequence[str], cold_start: str
) -> Embedder | None:
    """The embedder the strategies or the cold start need (the trainer's own when it has one,
    so embeddings are cached once), or None when none of them needs one."""
    import strategies

    needs = cold_start != "random" or any(
        strategies.get_measure(n).needs & {"embeddings", "labeled_embeddings"}
        for n in strategy_names
    )
    if not needs:
        return None
    return getattr(trainer, "embedder", None) or make_embedder(settings)


def build_controller(
    settings: Settings, store: Store, tool: Any, classes: list[str], progress: Progress = SILENT
) -> Any:
    from loop.controller import Controller

    trainer = make_trainer(settings)
    embedder = embedder_for(settings, trainer, [settings.strategy], settings.cold_start)
    return Controller(
        store,
        trainer,
        tool,
        classes=classes,
        models_dir=settings.models_dir,
        strategy=settings.strategy,
        batch_size=settings.batch_size,
        initial_batch_size=settings.initial_batch_size,
        min_new_labels=settings.min_new_labels,
        cold_start=settings.cold_start,
        eval_sample_size=settings.eval_sample_size,
        promotion=settings.promotion,
        promotion_tolerance=settings.promotion_tolerance,
        tune=settings.finetune.tune if settings.model == "finetune" else "off",
        tune_budget_s=settings.finetune.tune_budget_s,
        embedder=embedder,
        committee_size=settings.committee_size,
        slow_trainer=make_trainer(settings, settings.slow_model) if settings.slow_model else None,
        slow_min_new_labels=settings.slow_min_new_labels,
        stop_when=settings.stop_when,
        stopping=settings.stopping.model_dump(),
        seed=settings.seed,
        progress=progress,
        pool_chunk_size=settings.pool.chunk_size,
        max_candidates=settings.pool.max_candidates,
    )


def model_max_tokens(settings: Settings) -> int | None:
    """Tokens per text the project's model reads (None: tfidf-lr reads whole texts)."""
    if settings.model == "tfidf-lr":
        return None
    if settings.model == "setfit":
        return settings.setfit.max_length
    if settings.model == "finetune":
        return settings.finetune.max_length
    return settings.embed_lr.max_length


def check_data(
    settings: Settings,
    store: Store,
    classes: Sequence[str],
    progress: Progress = SILENT,
    **over: Any,
) -> dict[str, Any]:
    """``alloop check`` on ``store``: :func:`loop.quality.check_project` with the project's
    embedder (cached), the encoder's tokenizer, the check model and cleanlab. ``over`` replaces
    fields of ``settings.check`` (and ``label_errors``)."""
    from connectors.quality import TokenCounter, cleanlab_issues
    from loop.quality import CheckOptions, check_project

    opts = settings.check.model_dump()
    opts.update({k: v for k, v in over.items() if v is not None})
    label_errors = bool(opts.pop("label_errors", True))
    model = str(opts.pop("model"))
    options = CheckOptions(label_errors=label_errors, seed=settings.seed, **opts)
    embedder = make_embedder(settings)
    max_tokens = model_max_tokens(settings)
    return check_project(
        store,
        classes=classes,
        embed=lambda texts: embedder.embed(texts, progress),
        count_tokens=None if max_tokens is None else TokenCounter(settings.model_path),
        max_tokens=max_tokens,
        trainer=make_trainer(settings, model, augment=False, ensemble=False)
        if label_errors
        else None,
        find_issues=cleanlab_issues,
        options=options,
        progress=progress,
        model_name=model,
    )

"""Builds the parts from settings. The only module of ``loop`` that imports ``connectors``
(lazily, inside functions, so ``import loop.wiring`` stays cheap)."""

from __future__ import annotations

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

    return SqlStore.open(url or settings.db_url)


def trainer_params(settings: Settings) -> dict[str, Any]:
    if settings.model == "embed-lr":
        return settings.embed_lr.model_dump()
    return settings.finetune.model_dump()


def make_trainer(settings: Settings) -> Trainer:
    from connectors.models import make_trainer as _make

    return _make(settings.model, cache_dir=settings.cache / "embeddings", model_path=settings.model_path,
                 **trainer_params(settings))


def make_embedder(settings: Settings) -> Embedder:
    from connectors.models import make_embedder as _make

    return _make(settings.cache / "embeddings", model_path=settings.model_path,
                 batch_size=settings.embed_lr.batch_size, max_length=settings.embed_lr.max_length)


def load_dataset(name_or_path: str, settings: Settings, progress: Progress = SILENT):
    """A built-in dataset by name, or a labeled CSV/JSONL file by path."""
    from connectors.data import datasets

    if name_or_path in datasets.DATASETS:
        return datasets.load(name_or_path, settings.cache, progress=progress)
    path = Path(name_or_path)
    if path.exists():
        return datasets.load_file_dataset(path)
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
            "the project has no class list yet (found "
            f"{classes!r}).",
            "ingest labeled data (alloop ingest FILE with a label column) or set ALLOOP_CLASSES='[\"a\",\"b\"]'.",
        )
    return list(classes)


def import_labels(gold: dict[str, str]) -> list[Label]:
    return [Label(item_id=i, value=v, source="import", annotation_id=f"import:{i}") for i, v in gold.items()]

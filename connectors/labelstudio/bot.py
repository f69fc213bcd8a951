"""A simulated annotator that answers Label Studio tasks through the real API, as people would.

``AnnotatorBot`` plays ``annotators`` distinct Label Studio users (``bot1@alloop.local``,
``bot2@alloop.local``, ...; created once through the users API, found again on later runs). For
every task of the project that has fewer than ``annotators`` annotations, each bot user that
has not answered it yet creates one annotation (``completed_by`` = that user): the item's gold
class, or with probability ``error_rate`` a uniformly random other class, or with probability
``skip_rate`` a skip (``was_cancelled=True``, empty result). The three outcomes are disjoint:
``P(gold) = 1 - error_rate - skip_rate``.

Answers are a pure function of ``(seed, item id, annotator)``: each pair draws from its own
``np.random.Generator`` seeded with ``[seed, annotator, sha256(item id)]``, so reruns, the order
tasks are listed in and the number of workers never change an answer. Rerunning
``answer_pending`` creates nothing new (a bot user never answers a task twice).

Annotations are created one request each (the open-source server has no bulk create), from
``workers`` threads; the SDK's own retries are off for them (a retried POST could duplicate an
annotation): after a transient failure the task is read back and the annotation is created only
if it did not land. Library and transport errors become ``LabelingToolError``.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from connectors.labelstudio.tool import (
    CHOICES_NAME,
    ID_FIELD,
    _as_dict,
    _detail,
    _fix_for_status,
    _TransientError,
    parse_label_config,
    sdk_client,
    walk_tasks,
)
from loop.errors import ConfigError, DataError, LabelingToolError

if TYPE_CHECKING:
    from label_studio_sdk import LabelStudio

USER_DOMAIN = "alloop.local"
_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class BotAnswer:
    """One annotation the bot created: ``value`` is None for a skip; ``wrong`` when the value
    is not the gold class."""

    item_id: str
    task_id: int
    annotator: int  # 1-based index of the bot user
    user_id: int  # that user's Label Studio id (the annotation's completed_by)
    annotation_id: int
    value: str | None
    skipped: bool
    wrong: bool


@dataclass(frozen=True, slots=True)
class BotReport:
    """What one ``answer_pending`` call did: ``tasks`` that got at least one new annotation,
    ``annotations`` created (skips included), of which ``skipped`` skips and ``wrong`` answers
    other than the gold class; every annotation in ``answers`` (ordered by task, annotator)."""

    tasks: int
    annotations: int
    skipped: int
    wrong: int
    answers: tuple[BotAnswer, ...] = ()
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class Decision:
    """What annotator ``annotator`` answers for one item (``value`` None = skip)."""

    value: str | None
    skipped: bool
    wrong: bool


class AnnotatorBot:
    """Simulated annotators answering the tasks of Label Studio project ``project_id``.

    ``gold`` maps item ids (the tasks' ``data[id_field]``) to their true class; ``classes`` is
    the full class list (wrong answers are drawn from it). ``url``/``token`` build an SDK client
    on first use, or pass ``client``.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        project_id: int,
        gold: Mapping[str, str],
        classes: Sequence[str],
        annotators: int = 1,
        error_rate: float = 0.0,
        skip_rate: float = 0.0,
        seed: int = 0,
        choices_name: str = CHOICES_NAME,
        id_field: str = ID_FIELD,
        client: LabelStudio | None = None,
        workers: int = 4,
        page_size: int = 500,
        timeout: float = 60.0,
    ) -> None:
        if client is None and not token:
            raise ConfigError(
                f"AnnotatorBot for {url} needs an API token or an SDK client.",
                "pass token= (the local server's is in <home>/labelstudio/credentials.json)",
            )
        if isinstance(annotators, bool) or not isinstance(annotators, int) or annotators < 1:
            raise ConfigError(f"annotators must be an int >= 1; got {annotators!r}.", "use e.g. 3")
        for name, rate in (("error_rate", error_rate), ("skip_rate", skip_rate)):
            if not 0.0 <= float(rate) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1]; got {rate!r}.", "use e.g. 0.1")
        if float(error_rate) + float(skip_rate) > 1.0:
            raise ConfigError(
                f"error_rate + skip_rate must be <= 1 (they are disjoint outcomes); got "
                f"{error_rate} + {skip_rate}.",
                "lower one of them",
            )
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"seed must be an int >= 0; got {seed!r}.", "use e.g. 0")
        if workers < 1 or page_size < 1:
            raise ConfigError(
                f"workers and page_size must be >= 1; got {workers} and {page_size}.",
                "use e.g. workers=4, page_size=500",
            )
        self.classes = tuple(classes)
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise ConfigError(
                f"classes must be >= 2 distinct names; got {list(self.classes)}.",
                "give the project's full class list",
            )
        bad = sorted({f"{k!r}: {v!r}" for k, v in gold.items() if v not in self.classes})
        if bad:
            raise DataError(
                f"gold labels must be among the classes {list(self.classes)}; "
                f"{len(bad)} are not: {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}.",
                "fix the gold labels or the class list",
            )
        self.url = url.rstrip("/")
        self._token = token
        self._client = client
        self.project_id = int(project_id)
        self.gold = {str(k): v for k, v in gold.items()}
        self.annotators = annotators
        self.error_rate = float(error_rate)
        self.skip_rate = float(skip_rate)
        self.seed = seed
        self.choices_name = choices_name
        self.id_field = id_field
        self.workers = int(workers)
        self.page_size = int(page_size)
        self.timeout = float(timeout)
        self._to_name: str | None = None
        self._user_ids: tuple[int, ...] | None = None

    def __repr__(self) -> str:
        return (
            f"AnnotatorBot(url={self.url!r}, project_id={self.project_id}, "
            f"annotators={self.annotators}, error_rate={self.error_rate}, "
            f"skip_rate={self.skip_rate}, seed={self.seed})"
        )

    # -- client, errors --------------------------------------------------------------------
    @property
    def client(self) -> LabelStudio:
        if self._client is None:
            with self._call("connecting"):
                self._client = sdk_client(self.url, self._token, self.timeout)
        return self._client

    @contextlib.contextmanager
    def _call(self, what: str) -> Iterator[None]:
        """SDK and transport exceptions as LabelingToolError (transient ones as a subclass)."""
        import httpx
        from label_studio_sdk.core.api_error import ApiError

        try:
            yield
        except ApiError as err:
            status = err.status_code
            transient = status is None or status >= 500 or status in (408, 409, 429)
            raise (_TransientError if transient else LabelingToolError)(
                f"Label Studio at {self.url}: {what} failed with HTTP {status}: "
                f"{_detail(err.body)}.",
                _fix_for_status(status),
            ) from None
        except httpx.HTTPError as err:
            raise _TransientError(
                f"Label Studio at {self.url}: {what} failed: {type(err).__name__}: {err}.",
                "check Label Studio is running at that URL",
            ) from err

    # -- decisions (pure) ------------------------------------------------------------------
    def rng(self, item_id: str, annotator: int) -> np.random.Generator:
        """The generator of one (item, annotator) pair, independent of everything else."""
        digest = hashlib.sha256(str(item_id).encode("utf-8")).digest()
        words = np.frombuffer(digest, dtype="<u4").tolist()
        return np.random.default_rng([self.seed, int(annotator), *words])

    def decide(self, item_id: str, annotator: int = 1) -> Decision:
        """The answer of bot user ``annotator`` (1-based) for ``item_id``; DataError when the
        item has no gold label."""
        gold = self.gold.get(str(item_id))
        if gold is None:
            raise DataError(
                f"The bot has no gold label for item {item_id!r}.",
                "give a gold label for every item of the project",
            )
        rng = self.rng(item_id, annotator)
        u = float(rng.random())
        if u < self.skip_rate:
            return Decision(value=None, skipped=True, wrong=False)
        if u < self.skip_rate + self.error_rate:
            others = [c for c in self.classes if c != gold]
            return Decision(value=others[int(rng.integers(len(others)))], skipped=False, wrong=True)
        return Decision(value=gold, skipped=False, wrong=False)

    # -- users -----------------------------------------------------------------------------
    @staticmethod
    def username(annotator: int) -> str:
        return f"bot{annotator}@{USER_DOMAIN}"

    @property
    def user_ids(self) -> tuple[int, ...]:
        """Label Studio user ids of bot users 1..annotators (found, or created once)."""
        if self._user_ids is None:
            with self._call("listing users"):
                users = list(self.client.users.list())
            by_name: dict[str, int] = {}
            for u in users:
                for key in (getattr(u, "email", None), getattr(u, "username", None)):
                    if key:
                        by_name.setdefault(str(key), int(u.id))
            ids = []
            for n in range(1, self.annotators + 1):
                name = self.username(n)
                if name not in by_name:
                    with self._call(f"creating user {name}"):
                        user = self.client.users.create(
                            username=name, email=name, first_name="Bot", last_name=str(n)
                        )
                    by_name[name] = int(user.id)
                ids.append(by_name[name])
            self._user_ids = tuple(ids)
        return self._user_ids

    # -- project ---------------------------------------------------------------------------
    def _check_project(self) -> str:
        if self._to_name is None:
            with self._call(f"reading project {self.project_id}"):
                project = self.client.projects.get(id=self.project_id)
            config = parse_label_config(str(getattr(project, "label_config", "") or ""))
            if config.choices_name != self.choices_name:
                raise DataError(
                    f"Project {self.project_id} names its <Choices> {config.choices_name!r}; the "
                    f"bot was told {self.choices_name!r}.",
                    f"pass choices_name={config.choices_name!r}",
                )
            missing = [c for c in self.classes if c not in config.classes]
            if missing:
                raise DataError(
                    f"Project {self.project_id} has no choice for the bot's classes {missing} "
                    f"(it has {list(config.classes)}).",
                    "give the bot the project's class list",
                )
            self._to_name = config.to_name
        return self._to_name

    def _result(self, value: str) -> list[dict[str, Any]]:
        return [
            {
                "from_name": self.choices_name,
                "to_name": self._check_project(),
                "type": "choices",
                "value": {"choices": [value]},
            }
        ]

    def _tasks(self, filters: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Tasks matching ``filters`` with their annotations, walked by ``id > last``."""

        def page(query: str, last_id: int) -> list[dict[str, Any]]:
            with self._call(f"listing tasks of project {self.project_id} after id {last_id}"):
                pager: Any = self.client.tasks.list(
                    project=self.project_id,
                    fields="all",
                    page=1,
                    page_size=self.page_size,
                    query=query,
                )
                return [_as_dict(t) for t in (pager.items or [])]

        return walk_tasks(filters, self.page_size, page)

    def _item_of(self, task: Mapping[str, Any]) -> str:
        data = task.get("data")
        item = data.get(self.id_field) if isinstance(data, Mapping) else None
        if item is None:
            raise DataError(
                f"Task {task.get('id')} of project {self.project_id} has no data.{self.id_field}.",
                f"annotate only projects whose tasks carry {self.id_field} (pushed by the loop)",
            )
        return str(item)

    @staticmethod
    def _authors(task: Mapping[str, Any]) -> dict[int, int]:
        """completed_by user id -> annotation id, for the task's annotations (skips too)."""
        out: dict[int, int] = {}
        for ann in task.get("annotations") or []:
            if not isinstance(ann, Mapping):
                continue
            user = ann.get("completed_by")
            if isinstance(user, Mapping):
                user = user.get("id")
            if user is not None and ann.get("id") is not None:
                out.setdefault(int(user), int(ann["id"]))
        return out

    # -- answering -------------------------------------------------------------------------
    def pending(self, item_ids: Collection[str] | None = None) -> list[tuple[dict[str, Any], int]]:
        """``(task, annotator)`` pairs still to answer: tasks with fewer than ``annotators``
        annotations, bot users without an annotation on them (only ``item_ids`` when given)."""
        self._check_project()
        users = self.user_ids
        wanted = None if item_ids is None else {str(i) for i in item_ids}
        flt = {
            "filter": "filter:tasks:total_annotations",
            "operator": "less",
            "type": "Number",
            "value": self.annotators,
        }
        out: list[tuple[dict[str, Any], int]] = []
        for task in self._tasks([flt]):
            item = self._item_of(task)
            if wanted is not None and item not in wanted:
                continue
            authors = self._authors(task)
            out.extend((task, n) for n, uid in enumerate(users, 1) if uid not in authors)
        return out

    def answer_pending(self, item_ids: Collection[str] | None = None) -> BotReport:
        """Answer every pending (task, bot user) pair; see the module docstring.

        Every decision is made (and every item checked for a gold label) before anything is
        written: an item without gold raises DataError and creates no annotation. A failure
        part-way (server gone) raises LabelingToolError and keeps what was already written; a
        rerun answers the rest.
        """
        t0 = time.perf_counter()
        todo = self.pending(item_ids)
        missing = sorted({self._item_of(t) for t, _ in todo} - set(self.gold))
        if missing:
            shown = ", ".join(repr(m) for m in missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise DataError(
                f"Project {self.project_id} has {len(missing)} pending task(s) whose item has no "
                f"gold label: {shown}.",
                "give the bot a gold label for every item pushed to the project",
            )
        plan = [(t, n, self.decide(self._item_of(t), n)) for t, n in todo]
        if self.workers == 1 or len(plan) <= 1:
            answers = [self._create(t, n, d) for t, n, d in plan]
        else:
            with ThreadPoolExecutor(max_workers=self.workers) as pool:
                futures = [pool.submit(self._create, t, n, d) for t, n, d in plan]
            errors = [f.exception() for f in futures if f.exception() is not None]
            if errors:
                raise errors[0]  # type: ignore[misc]
            answers = [f.result() for f in futures]
        answers.sort(key=lambda a: (a.task_id, a.annotator))
        return BotReport(
            tasks=len({a.task_id for a in answers}),
            annotations=len(answers),
            skipped=sum(a.skipped for a in answers),
            wrong=sum(a.wrong for a in answers),
            answers=tuple(answers),
            seconds=time.perf_counter() - t0,
        )

    def _create(self, task: Mapping[str, Any], annotator: int, decision: Decision) -> BotAnswer:
        task_id = int(task["id"])
        item = self._item_of(task)
        user = self.user_ids[annotator - 1]
        result = [] if decision.value is None else self._result(decision.value)
        what = f"annotating task {task_id} (item {item!r}) as {self.username(annotator)}"
        ann_id = self._create_once(task_id, user, result, decision.skipped, what)
        return BotAnswer(
            item_id=item,
            task_id=task_id,
            annotator=annotator,
            user_id=user,
            annotation_id=ann_id,
            value=decision.value,
            skipped=decision.skipped,
            wrong=decision.wrong,
        )

    def _create_once(
        self, task_id: int, user: int, result: list[dict[str, Any]], skipped: bool, what: str
    ) -> int:
        """Create one annotation without the SDK's retries; after a transient failure, read
        the task back and retry only when the annotation did not land."""
        attempt = 0
        while True:
            try:
                with self._call(what):
                    ann = self.client.annotations.create(
                        id=task_id,
                        result=result,
                        was_cancelled=skipped,
                        completed_by=user,
                        request_options={"max_retries": 0},
                    )
                return int(ann.id)  # type: ignore[arg-type]
            except _TransientError:
                attempt += 1
                if attempt >= _ATTEMPTS:
                    raise
                time.sleep(0.5 * 2 ** (attempt - 1))
                landed = self._authors(self._task(task_id)).get(user)
                if landed is not None:
                    return landed

    def _task(self, task_id: int) -> dict[str, Any]:
        with self._call(f"reading task {task_id}"):
            return _as_dict(self.client.tasks.get(id=str(task_id)))

    # -- helpers for tests and demos -------------------------------------------------------
    def find_task(self, item_id: str) -> dict[str, Any]:
        """The task of ``item_id`` (with annotations); DataError when there is none or several."""
        flt = {
            "filter": f"filter:tasks:data.{self.id_field}",
            "operator": "equal",
            "type": "String",
            "value": str(item_id),
        }
        found = [t for t in self._tasks([flt]) if self._item_of(t) == str(item_id)]
        if len(found) != 1:
            raise DataError(
                f"Expected one task for item {item_id!r} in project {self.project_id}; found "
                f"{len(found)} ({[t['id'] for t in found]}).",
                "push the item once (LabelStudioTool.send is idempotent on the item id)",
            )
        return found[0]

    def annotation_of(self, item_id: str, annotator: int = 1) -> int:
        """The id of bot user ``annotator``'s annotation on ``item_id``'s task."""
        self._check_annotator(annotator)
        user = self.user_ids[annotator - 1]
        ann_id = self._authors(self.find_task(item_id)).get(user)
        if ann_id is None:
            raise DataError(
                f"{self.username(annotator)} has no annotation on item {item_id!r}.",
                "answer it first (answer_pending)",
            )
        return ann_id

    def edit(self, item_id: str, value: str, annotator: int = 1) -> int:
        """Change the bot's annotation on ``item_id`` to ``value`` (a skip becomes an answer);
        returns the annotation id."""
        if value not in self.classes:
            raise DataError(
                f"edit: {value!r} is not one of the classes {list(self.classes)}.",
                "pick a class (create other annotations through the SDK directly)",
            )
        ann_id = self.annotation_of(item_id, annotator)
        with self._call(f"editing annotation {ann_id} of item {item_id!r}"):
            self.client.annotations.update(
                id=ann_id, result=self._result(value), was_cancelled=False
            )
        return ann_id

    def skip(self, item_id: str, annotator: int = 1) -> int:
        """Turn the bot's annotation on ``item_id`` into a skip (or create a skip when it has
        none); returns the annotation id."""
        self._check_annotator(annotator)
        user = self.user_ids[annotator - 1]
        task = self.find_task(item_id)
        ann_id = self._authors(task).get(user)
        if ann_id is None:
            what = f"skipping task {task['id']} (item {item_id!r})"
            return self._create_once(int(task["id"]), user, [], True, what)
        with self._call(f"skipping with annotation {ann_id} of item {item_id!r}"):
            self.client.annotations.update(id=ann_id, result=[], was_cancelled=True)
        return ann_id

    def delete(self, item_id: str, annotator: int = 1) -> int:
        """Delete the bot's annotation on ``item_id``; returns the deleted annotation's id."""
        ann_id = self.annotation_of(item_id, annotator)
        with self._call(f"deleting annotation {ann_id} of item {item_id!r}"):
            self.client.annotations.delete(id=ann_id)
        return ann_id

    def _check_annotator(self, annotator: int) -> None:
        if not 1 <= annotator <= self.annotators:
            raise ConfigError(
                f"annotator must be in 1..{self.annotators}; got {annotator}.",
                "use the 1-based index of one of the bot's users",
            )

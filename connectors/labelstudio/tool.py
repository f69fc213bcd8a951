"""Label Studio as the project's ``LabelingTool`` (label-studio-sdk 2.1.2, server 1.23.2).

One Label Studio project per alloop project, found by title. Each item becomes one task::

    data = {"text": <item text>, "alloop_id": <item id>, "alloop_kind": "query" | "eval"}

with one prediction (the model's class as a pre-annotation, ``model_version`` of the request).

Queue order. Label Studio's "Uncertainty sampling" queue (set on projects created here) and the
Data Manager's "prediction score" sort show the LOWEST prediction score first, while the loop's
strategy scores are higher = ask first. ``send`` therefore writes a rank-based score
(``queue_scores``): the requests of one call get dense ranks by strategy score (highest first,
ties share a rank, NaN last) and rank ``r`` of ``m`` distinct ranks becomes ``r / (m - 1)`` in
[0, 1]; the item the loop wants most gets 0. Ranks do not depend on the strategy's scale, so
the mapping is the same for every strategy; items from different pushes with the same rank
share a score. A request without a predicted class still gets a prediction (empty result) to
carry the score. Predictions whose ``model_version`` is the project's are shown as
pre-annotations: ``send`` moves the project to the requests' model version when they share one
(``set_model_version`` does it by hand).

Idempotence. Tasks are keyed on ``data.alloop_id``. Before importing, ``push`` counts the
tasks whose ``alloop_id`` is one of the request's ids (Data Manager filter ``in_list``, as many
ids per request as a GET URL takes, ~2,500 short ids), lists them only when the count is not
zero, and imports only the items without a task; a rerun after a crash between Label Studio's
import and the caller's own record therefore imports nothing twice. An item found with more
than one task loses the extra ones (``remove_duplicates``). Imports go in batches of
``batch_size``, without the SDK's automatic retries (a retried POST can duplicate tasks): a
failed batch is retried here after looking up which of its ids landed, and a batch that needed
a retry is counted once more and cleared of duplicates. A batch imported at the first attempt
is not counted again: nothing else in this call can have created its tasks. Two processes that
push the same items at the same moment can both find them missing and both import them;
``check_after_import=True`` counts every batch after its import and deletes such duplicates
(one more request per batch). Requests for ``n`` new items: ``ceil(n / 2,500)`` counts and
``ceil(n / batch_size)`` imports, plus one model-version update when the project shows another
version (a project without one takes the version of the predictions it imports).

Polling. ``fetch_labels(since)`` lists the tasks whose ``updated_at`` is later than
``since - overlap`` (all tasks when ``since`` is None), with every current annotation. Label
Studio 1.23.2 moves a task's ``updated_at`` on every annotation create, update, skip and delete
(measured; a delete also lowers ``total_annotations``), so a deleted annotation shows up as a
task whose snapshot no longer holds it, and ``Store.sync_labels`` withdraws it. Pages are
walked by task id (``id > last seen``, one filter per request) rather than by page number: the
server answers 404 past the last page and page numbers shift while annotators work. The cursor
returned (``FetchResult.cursor``, also ``tool.last_cursor``) is the newest task ``updated_at``
seen, in the server's own clock; ``overlap`` re-reads a few seconds before it to catch writes
that were committed after a later one was already visible. Re-reading is harmless: ingestion is
idempotent on the annotation id.

Webhooks. ``parse_webhook`` is a pure parser for ANNOTATION_CREATED / ANNOTATION_UPDATED /
ANNOTATIONS_DELETED payloads (shapes captured from a real 1.23.2 server). A created or updated
annotation gives one ``Label`` for ``Store.add_labels``. A deletion payload names only the
annotation ids (no task, no item): it is returned as ``deleted_annotation_ids`` and the caller
polls ``fetch_labels`` (the task's ``updated_at`` moved) to withdraw it. Label Studio sends
webhooks once, synchronously, with a 1 s timeout: poll as well.

Not thread-safe: use one tool per thread.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

from loop.errors import DataError, LabelingToolError
from loop.records import Label, LabelRejection, LabelRequest, LabelSnapshot
from loop.text import char_problem, escape_forbidden

if TYPE_CHECKING:
    from label_studio_sdk import LabelStudio

SOURCE = "label-studio"
ID_FIELD = "alloop_id"
KIND_FIELD = "alloop_kind"
CHOICES_NAME = "label"
WEBHOOK_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED")
_LS_DATETIME = "%Y-%m-%dT%H:%M:%S.%fZ"  # the Data Manager's Datetime filter format
_VERSION_UNKNOWN = ""  # the project has a model version this tool does not know
# A lookup sends its ids in the GET URL. Label Studio's own server (Python's http.server), uwsgi
# (buffer-size 65535) and httpx take up to 64 KiB; gunicorn (4,094) and nginx (8 KiB) less.
_LOOKUP_URL_CHARS = 48_000  # percent-encoded; ~2,500 short ids per request
_SAFE_LOOKUP_URL_CHARS = 3_500  # used after a server or proxy refuses a long URL
_LOOKUP_URL_OVERHEAD = 600  # path, project, fields, the filters around the ids
_MAX_LOOKUP_IDS = 5_000  # SQL parameters per query stay far below SQLite's and PostgreSQL's
_URL_TOO_LONG = frozenset({400, 414, 431})  # gunicorn answers 400, nginx 414
T = TypeVar("T")


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------


class _TransientError(LabelingToolError):
    """A failure worth retrying (server unreachable, timeout, 5xx, 408/409/429)."""


class _Refused(LabelingToolError):
    """The server answered with an HTTP status that retrying will not change (4xx)."""

    def __init__(self, what: str, fix: str | None = None, *, status: int | None = None) -> None:
        super().__init__(what, fix)
        self.status = status


@dataclass(frozen=True, slots=True)
class Rejection:
    """An annotation that is not a usable label (unknown class, malformed result, task without
    an alloop id). ``item_id`` is None when the task names no item."""

    item_id: str | None
    annotation_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class FetchResult:
    """What one poll found. Ingest ``snapshot`` with ``Store.sync_labels``, record
    ``rejections``, and pass ``cursor`` as ``since`` to the next poll."""

    snapshot: LabelSnapshot
    rejections: tuple[Rejection, ...]
    cursor: datetime | None  # newest task change seen (server clock, UTC); None: nothing yet
    tasks_seen: int


@dataclass(frozen=True, slots=True)
class SendResult:
    requested: int  # distinct item ids in the call
    imported: int  # tasks created by this call
    already_present: int  # items that had a task before this call
    duplicates_removed: int  # extra tasks of this call's items deleted
    task_ids: tuple[int, ...] = ()  # the created tasks' ids
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """A parsed webhook payload. ``labels`` go to ``Store.add_labels`` (one annotation, not a
    complete snapshot of the item); ``deleted_annotation_ids`` need a ``fetch_labels`` poll."""

    action: str
    project_id: int | None
    labels: tuple[Label, ...] = ()
    rejections: tuple[Rejection, ...] = ()
    deleted_annotation_ids: tuple[str, ...] = ()
    item_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LabelConfig:
    """The parts of a project's labeling config the connector relies on."""

    classes: tuple[str, ...]
    choices_name: str
    to_name: str
    text_value: str | None  # the Text tag's value, e.g. "$text"
    single: bool = True
    extra_controls: tuple[str, ...] = field(default_factory=tuple)


# --------------------------------------------------------------------------------------------
# labeling config
# --------------------------------------------------------------------------------------------


def label_config(classes: Sequence[str], text_field: str = "text") -> str:
    """A single-choice text classification config over ``classes`` (XML-escaped)."""
    classes = _check_classes(classes)
    if not text_field or not text_field.replace("_", "").isalnum():
        raise DataError(
            f"Text field name must be letters, digits or '_'; got {text_field!r}.",
            "use a plain name such as 'text'",
        )
    choices = "".join(f"<Choice value={quoteattr(c)}/>" for c in classes)
    return (
        f'<View><Text name="text" value="${text_field}"/>'
        f'<Choices name="{CHOICES_NAME}" toName="text" choice="single" showInline="true">'
        f"{choices}</Choices></View>"
    )


def parse_label_config(xml: str) -> LabelConfig:
    """Read classes, the Choices name and the Text value out of a labeling config."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as err:
        raise LabelingToolError(
            f"The project's labeling config is not valid XML ({err}).",
            "fix the labeling config in Label Studio (Settings > Labeling Interface)",
        ) from err
    choices = [el for el in root.iter() if el.tag == "Choices"]
    if len(choices) != 1:
        raise LabelingToolError(
            f"The project's labeling config has {len(choices)} <Choices> tags, expected exactly 1.",
            "use a project whose config has one single-choice <Choices> over the text",
        )
    ch = choices[0]
    texts = [el for el in root.iter() if el.tag == "Text"]
    to_name = ch.get("toName", "")
    text_value = next((t.get("value") for t in texts if t.get("name") == to_name), None)
    controls = tuple(
        el.tag for el in root.iter() if el.tag in {"Labels", "TextArea", "Rating", "Taxonomy"}
    )
    return LabelConfig(
        classes=tuple(c.get("value", "") for c in ch.iter("Choice")),
        choices_name=ch.get("name", ""),
        to_name=to_name,
        text_value=text_value,
        single=ch.get("choice", "single") in ("single", "single-radio"),
        extra_controls=controls,
    )


def _check_classes(classes: Sequence[str]) -> tuple[str, ...]:
    out = tuple(classes)
    if len(out) < 2:
        raise DataError(
            f"A classification project needs at least 2 classes; got {list(out)}.",
            "give the full class list",
        )
    bad = [c for c in out if not isinstance(c, str) or not c.strip()]
    if bad:
        raise DataError(
            f"Class names must be non-empty strings; got {bad!r}.", "fix the class list"
        )
    dup = sorted({c for c in out if out.count(c) > 1})
    if dup:
        raise DataError(f"Class names must be unique; repeated: {dup}.", "fix the class list")
    return out


# --------------------------------------------------------------------------------------------
# annotations -> labels (shared by polling and webhooks)
# --------------------------------------------------------------------------------------------


def annotation_to_label(
    annotation: Mapping[str, Any],
    item_id: str,
    classes: Sequence[str],
    choices_name: str = CHOICES_NAME,
) -> Label | Rejection:
    """One Label Studio annotation as a ``Label`` (source ``label-studio``), or a ``Rejection``.

    ``was_cancelled`` (the annotator pressed Skip) is a skip: ``skipped=True``, ``value=None``.
    Otherwise the result must hold exactly one ``choices`` region from ``choices_name`` with
    exactly one choice among ``classes``.
    """
    ann_id = annotation.get("id")
    if ann_id is None:
        return Rejection(item_id, "", "annotation has no id")
    annotation_id = str(ann_id)
    why = char_problem(annotation_id)
    if why:
        return Rejection(item_id, escape_forbidden(annotation_id), f"the annotation id {why}")
    created = _parse_time(annotation.get("created_at"))
    annotator = _user(annotation.get("completed_by"))
    if annotator is not None and (why := char_problem(annotator)):
        shown = escape_forbidden(annotator)
        return Rejection(item_id, annotation_id, f"the annotator {shown!r} {why}")
    if annotation.get("was_cancelled"):
        return Label(
            item_id=item_id,
            value=None,
            source=SOURCE,
            annotation_id=annotation_id,
            annotator=annotator,
            created_at=created,
            skipped=True,
        )
    result = annotation.get("result")
    if not isinstance(result, list):
        return Rejection(item_id, annotation_id, f"result is {type(result).__name__}, not a list")
    regions = [
        r
        for r in result
        if isinstance(r, Mapping)
        and r.get("type") == "choices"
        and r.get("from_name") == choices_name
    ]
    if not regions:
        kinds = sorted({str(r.get("type")) for r in result if isinstance(r, Mapping)})
        why = f"no '{choices_name}' choice in the result" + (
            f" (found {kinds})" if kinds else " (empty)"
        )
        return Rejection(item_id, annotation_id, why)
    if len(regions) > 1:
        return Rejection(
            item_id, annotation_id, f"{len(regions)} '{choices_name}' regions, expected 1"
        )
    value = regions[0].get("value")
    chosen = value.get("choices") if isinstance(value, Mapping) else None
    if not isinstance(chosen, list) or len(chosen) != 1 or not isinstance(chosen[0], str):
        return Rejection(item_id, annotation_id, f"expected exactly one choice, got {chosen!r}")
    if chosen[0] not in classes:  # also a choice with control characters: no class has them
        return Rejection(
            item_id,
            annotation_id,
            f"choice {chosen[0]!r} is not one of the classes {list(classes)}",
        )
    return Label(
        item_id=item_id,
        value=chosen[0],
        source=SOURCE,
        annotation_id=annotation_id,
        annotator=annotator,
        created_at=created,
        skipped=False,
    )


def task_item_id(task: Mapping[str, Any], id_field: str = ID_FIELD) -> tuple[str | None, str]:
    """The item id a Label Studio task carries in ``data[id_field]``, or ``(None, why not)``
    (missing, or breaking the character rule of :mod:`loop.text`)."""
    data = task.get("data")
    item = data.get(id_field) if isinstance(data, Mapping) else None
    if item is None:
        return None, f"task {task.get('id')} has no {id_field}"
    item_id = str(item)
    why = char_problem(item_id)
    if why:
        return None, f"task {task.get('id')}: its {id_field} {escape_forbidden(item_id)!r} {why}"
    return item_id, ""


def parse_webhook(
    payload: Mapping[str, Any],
    classes: Sequence[str],
    *,
    choices_name: str = CHOICES_NAME,
    id_field: str = ID_FIELD,
) -> WebhookEvent:
    """Parse a Label Studio webhook payload (pure; no I/O).

    ANNOTATION_CREATED / ANNOTATION_UPDATED -> one label or one rejection for the task's item.
    ANNOTATIONS_DELETED -> ``deleted_annotation_ids`` (the payload names no task or item).
    Any other action -> an event with nothing in it (acknowledge and ignore).
    Raises ``DataError`` for a payload that is not shaped like Label Studio's.
    """
    if not isinstance(payload, Mapping):
        raise DataError(
            f"A webhook payload must be a JSON object; got {type(payload).__name__}.",
            "register the webhook with send_payload=True",
        )
    action = payload.get("action")
    if not isinstance(action, str) or not action:
        raise DataError(
            f"Webhook payload has no 'action' (keys: {sorted(payload)[:10]}).",
            "point only Label Studio webhooks (send_payload=True) at this endpoint",
        )
    project = payload.get("project")
    project_id = project.get("id") if isinstance(project, Mapping) else project
    project_id = project_id if isinstance(project_id, int) else None
    if action in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED"):
        annotation = payload.get("annotation")
        task = payload.get("task")
        if not isinstance(annotation, Mapping) or not isinstance(task, Mapping):
            raise DataError(
                f"{action} payload needs 'annotation' and 'task' objects; got "
                f"{type(annotation).__name__} and {type(task).__name__}.",
                "register the webhook with send_payload=True",
            )
        item_id, why = task_item_id(task, id_field)
        if item_id is None:
            rej = Rejection(None, escape_forbidden(str(annotation.get("id", ""))), why)
            return WebhookEvent(action, project_id, rejections=(rej,))
        out = annotation_to_label(annotation, item_id, classes, choices_name)
        if isinstance(out, Label):
            return WebhookEvent(action, project_id, labels=(out,), item_ids=(item_id,))
        return WebhookEvent(action, project_id, rejections=(out,), item_ids=(item_id,))
    if action == "ANNOTATIONS_DELETED":
        anns = payload.get("annotations")
        if not isinstance(anns, list) or not all(
            isinstance(a, Mapping) and a.get("id") is not None for a in anns
        ):
            raise DataError(
                "ANNOTATIONS_DELETED payload needs 'annotations': a list of objects with an 'id'.",
                "register the webhook with send_payload=True",
            )
        return WebhookEvent(
            action, project_id, deleted_annotation_ids=tuple(str(a["id"]) for a in anns)
        )
    return WebhookEvent(action, project_id)


# --------------------------------------------------------------------------------------------
# queue score
# --------------------------------------------------------------------------------------------


def queue_scores(strategy_scores: Sequence[float]) -> list[float]:
    """Map strategy scores (higher = ask first) to Label Studio prediction scores (lower =
    shown first): dense rank by descending score, NaN last, ``rank / (n_ranks - 1)`` in [0, 1].

    ``(n,) -> (n,)``; equal scores share a value; a single request gets 0.
    """
    vals = [float(s) for s in strategy_scores]
    finite = sorted({v for v in vals if not math.isnan(v)}, reverse=True)
    n_ranks = len(finite) + (1 if any(math.isnan(v) for v in vals) else 0)
    if n_ranks <= 1:
        return [0.0] * len(vals)
    rank = {v: i for i, v in enumerate(finite)}
    return [(n_ranks - 1 if math.isnan(v) else rank[v]) / (n_ranks - 1) for v in vals]


# --------------------------------------------------------------------------------------------
# the tool
# --------------------------------------------------------------------------------------------


def sdk_client(
    url: str, token: str | None, timeout: float, max_retries: int | None = None
) -> LabelStudio:
    """An SDK client whose HTTP connections are not kept alive: on Label Studio's own server a
    request on a reused connection waits ~40 ms longer (delayed ACK) than one on a new
    connection (~20 ms), which made small pushes and polls three times slower."""
    import httpx
    from label_studio_sdk import LabelStudio

    http = httpx.Client(
        timeout=timeout, limits=httpx.Limits(max_keepalive_connections=0), follow_redirects=True
    )
    kwargs: dict[str, Any] = {"base_url": url, "api_key": token or "", "httpx_client": http}
    if max_retries is not None:
        kwargs["max_retries"] = max_retries
    return LabelStudio(**kwargs)


def walk_tasks(
    filters: list[dict[str, Any]],
    page_size: int,
    page: Callable[[str, int], list[dict[str, Any]]],
) -> Iterator[dict[str, Any]]:
    """Every task matching ``filters``, ordered by id, one ``page(query, last_id)`` call per
    page of ``page_size`` walked by ``id > last`` (the SDK's own pager ends in a 404 past the
    last page)."""
    last_id = 0
    while True:
        items = [
            *filters,
            {
                "filter": "filter:tasks:id",
                "operator": "greater",
                "type": "Number",
                "value": last_id,
            },
        ]
        query = json.dumps(
            {"filters": {"conjunction": "and", "items": items}, "ordering": ["tasks:id"]}
        )
        tasks = page(query, last_id)
        yield from tasks
        if len(tasks) < page_size:
            return
        last_id = max(int(t["id"]) for t in tasks)


class LabelStudioTool:
    """``LabelingTool`` over one Label Studio project (found or created by title).

    ``url`` and ``token`` (a legacy 40-hex token or a personal access token) build an SDK
    client on first use; or pass ``client`` (a ``label_studio_sdk.LabelStudio``).
    ``max_retries``: the SDK's own retries of reads on connection errors, 5xx, 408/409/429
    (1 s, 2 s, ... backoff); imports are never retried by the SDK (see ``send``).
    ``batch_size``: tasks per import request (synchronous; 2,000 with predictions take
    ~1.3-2.5 s and hold Label Studio's database for that long). ``check_after_import``:
    count the tasks of every imported batch once more and delete duplicates, for two processes
    that may push the same items at the same moment (one more request per batch).
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        project_title: str,
        classes: Sequence[str],
        text_field: str = "text",
        client: LabelStudio | None = None,
        project_id: int | None = None,
        batch_size: int = 2000,
        page_size: int = 500,
        overlap: timedelta = timedelta(seconds=5),
        timeout: float = 60.0,
        max_retries: int = 2,
        set_model_version_on_send: bool = True,
        check_after_import: bool = False,
    ) -> None:
        if client is None and not token:
            raise DataError(
                f"LabelStudioTool for {url} needs an API token or an SDK client.",
                "pass token= (see <home>/labelstudio/credentials.json for the local server)",
            )
        if batch_size < 1 or page_size < 1:
            raise DataError(
                f"batch_size and page_size must be >= 1; got {batch_size} and {page_size}.",
                "use e.g. 2000 and 500",
            )
        if not project_title.strip():
            raise DataError("Label Studio project title is empty.", "give a project title")
        self.url = url.rstrip("/")
        self._token = token
        self._client = client
        self.project_title = project_title
        self.classes = _check_classes(classes)
        self.text_field = text_field
        self.config_xml = label_config(self.classes, text_field)
        self.project_id = project_id
        self.batch_size = int(batch_size)
        self.page_size = int(page_size)
        self.overlap = overlap
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.set_model_version_on_send = set_model_version_on_send
        self.check_after_import = check_after_import
        self._lookup_url_chars = _LOOKUP_URL_CHARS
        self._choices_name = CHOICES_NAME
        self._to_name = "text"
        self._model_version: str | None = None
        self._project_checked = False
        self.last_rejections: tuple[Rejection, ...] = ()
        self.last_cursor: datetime | None = None
        self.last_send: SendResult | None = None

    def __repr__(self) -> str:
        return (
            f"LabelStudioTool(url={self.url!r}, project_title={self.project_title!r}, "
            f"project_id={self.project_id}, classes={list(self.classes)})"
        )

    # -- client and errors ---------------------------------------------------------------
    @property
    def client(self) -> LabelStudio:
        if self._client is None:
            with self._call("connecting"):
                self._client = sdk_client(self.url, self._token, self.timeout, self.max_retries)
        return self._client

    @contextlib.contextmanager
    def _call(self, what: str) -> Iterator[None]:
        """Turn SDK and transport exceptions into LabelingToolError (never with the token)."""
        import httpx
        from label_studio_sdk.core.api_error import ApiError

        try:
            yield
        except ApiError as err:
            status = err.status_code
            message = f"Label Studio at {self.url}: {what} failed with HTTP {status}: "
            message += f"{_detail(err.body)}."
            if status is None or status >= 500 or status in (408, 409, 429):
                raise _TransientError(message, _fix_for_status(status)) from None
            raise _Refused(message, _fix_for_status(status), status=status) from None
        except httpx.TimeoutException as err:
            raise _TransientError(
                f"Label Studio at {self.url}: {what} timed out after {self.timeout:.0f} s "
                f"({type(err).__name__}).",
                "check the server is not overloaded (see its log), or raise the timeout",
            ) from err
        except httpx.HTTPError as err:
            raise _TransientError(
                f"Label Studio at {self.url}: {what} failed: {type(err).__name__}: {err}.",
                "check Label Studio is running at that URL (deploy/labelstudio/start.sh starts "
                "the local one) and the URL setting is right",
            ) from err

    def _api(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        with self._call(what):
            return fn(*args, **kwargs)

    # -- project -------------------------------------------------------------------------
    def ensure_project(self, *, update_config: bool = False) -> int:
        """Find the project titled ``project_title`` (exact title) or create it with the
        generated config; returns its id.

        An existing project whose classes differ raises ``LabelingToolError`` naming the
        differences, unless ``update_config`` (then its config is replaced; Label Studio refuses
        when existing annotations use a removed class).
        """
        if self.project_id is not None and self._project_checked:
            return self.project_id
        client = self.client
        project: Any
        if self.project_id is not None:
            project = self._api(
                f"reading project {self.project_id}", client.projects.get, id=self.project_id
            )
        else:
            matches = self._find_projects(self.project_title)
            if len(matches) > 1:
                ids = sorted(int(p.id) for p in matches)
                raise LabelingToolError(
                    f"Label Studio at {self.url} has {len(matches)} projects titled "
                    f"{self.project_title!r} (ids {ids}); expected one.",
                    "rename or delete the extra ones, or configure the project id",
                )
            if not matches:
                project = self._api(
                    f"creating project {self.project_title!r}",
                    client.projects.create,
                    title=self.project_title,
                    label_config=self.config_xml,
                    sampling="Uncertainty sampling",
                    description="Active-learning queue managed by alloop.",
                )
                self.project_id = int(project.id)
                self._project_checked = True
                self._model_version = None
                return self.project_id
            project = matches[0]
        pid = int(project.id)
        config = parse_label_config(str(getattr(project, "label_config", "") or ""))
        problems = self._config_problems(config)
        if problems:
            if not update_config:
                raise LabelingToolError(
                    f"Label Studio project {getattr(project, 'title', '')!r} (id {pid}) at "
                    f"{self.url} does not match this loop: {'; '.join(problems)}.",
                    "use another project title for these classes, or update the project's "
                    "labeling config (Settings > Labeling Interface, or ensure_project("
                    "update_config=True))",
                )
            self._api(
                f"updating the labeling config of project {pid}",
                client.projects.update,
                id=pid,
                label_config=self.config_xml,
            )
            config = parse_label_config(self.config_xml)
        self._choices_name = config.choices_name
        self._to_name = config.to_name
        self.project_id = pid
        self._model_version = getattr(project, "model_version", None) or None
        self._project_checked = True
        return pid

    def _find_projects(self, title: str) -> list[Any]:
        out: list[Any] = []
        page = 1
        while True:
            pager: Any = self._api(
                "listing projects",
                self.client.projects.list,
                title=title,
                page=page,
                page_size=100,
            )
            items = list(pager.items or [])
            out.extend(p for p in items if getattr(p, "title", None) == title)
            total = getattr(pager.response, "count", None)
            if not items or len(items) < 100 or (total is not None and page * 100 >= total):
                return out
            page += 1

    def _config_problems(self, config: LabelConfig) -> list[str]:
        problems = []
        have, want = list(config.classes), list(self.classes)
        missing = [c for c in want if c not in have]
        extra = [c for c in have if c not in want]
        if missing:
            problems.append(f"classes missing in the project: {missing}")
        if extra:
            problems.append(f"classes in the project but not in the loop: {extra}")
        if config.text_value != f"${self.text_field}":
            problems.append(
                f"its text tag reads {config.text_value!r}, expected ${self.text_field}"
            )
        if not config.single:
            problems.append('its <Choices> allows multiple choices, expected choice="single"')
        return problems

    def set_model_version(self, version: str) -> None:
        """Make predictions of ``version`` the ones annotators see as pre-annotations."""
        pid = self.ensure_project()
        self._api(
            f"setting model_version of project {pid}",
            self.client.projects.update,
            id=pid,
            model_version=version,
        )
        self._model_version = version

    # -- ML backend ----------------------------------------------------------------------
    def connect_ml_backend(self, url: str, user: str, password: str, title: str = "alloop") -> int:
        """Connect ``url`` as this project's ML backend with HTTP basic auth (idempotent on the
        URL: an existing connection gets the credentials again); returns its id.

        Label Studio checks the backend's health and setup while connecting, so it must
        already answer. Connecting adds a project webhook to ``<url>/webhook`` that sends
        every event without the basic auth; it is removed (labels come through the loop's own
        webhook). The project's ``model_version``, which connecting resets to the backend's
        title, is put back, so the loop's pre-annotations stay visible."""
        pid = self.ensure_project()
        client = self.client
        url = url.rstrip("/")
        project = self._api(f"reading project {pid}", client.projects.get, id=pid)
        version = getattr(project, "model_version", None) or None
        auth = {"auth_method": "BASIC_AUTH", "basic_auth_user": user, "basic_auth_pass": password}
        found = [
            b
            for b in self._api(f"listing ML backends of project {pid}", client.ml.list, project=pid)
            or []
            if str(getattr(b, "url", "")).rstrip("/") == url
        ]
        if found:
            backend = found[0]
            self._api(
                f"updating ML backend {backend.id} of project {pid}",
                client.ml.update,
                id=int(backend.id),
                url=url,
                project=pid,
                title=title,
                **auth,
            )
        else:
            backend = self._api(
                f"connecting the ML backend {url} to project {pid}",
                client.ml.create,
                url=url,
                project=pid,
                title=title,
                **auth,
            )
        hooks = self._api(
            f"listing webhooks of project {pid}", client.webhooks.list, project=str(pid)
        )
        for hook in hooks or []:
            if str(getattr(hook, "url", "")).rstrip("/") == url + "/webhook":
                self._api(f"removing webhook {hook.id}", client.webhooks.delete, id=int(hook.id))
        after = self._api(f"reading project {pid}", client.projects.get, id=pid)
        if version is not None and (getattr(after, "model_version", None) or None) != version:
            self.set_model_version(version)
        return int(backend.id)

    # -- webhooks ------------------------------------------------------------------------
    def register_webhook(self, url: str, headers: Mapping[str, str] | None = None) -> int:
        """Have Label Studio POST this project's annotation events to ``url`` (idempotent on
        the URL); returns the webhook id. ``headers`` are sent as given with every event (Label
        Studio signs nothing: put a shared secret here and check it on receipt)."""
        pid = self.ensure_project()
        hooks = self._api(
            f"listing webhooks of project {pid}", self.client.webhooks.list, project=str(pid)
        )
        want = dict(headers or {})
        for hook in hooks or []:
            if getattr(hook, "url", None) == url and getattr(hook, "project", None) == pid:
                if (getattr(hook, "headers", None) or {}) != want or not getattr(
                    hook, "is_active", True
                ):
                    # a changed secret must reach Label Studio, else every event gets 401
                    self._api(
                        f"updating webhook {hook.id} of project {pid}",
                        self.client.webhooks.update,
                        id=int(hook.id),
                        headers=want,
                        is_active=True,
                        actions=list(WEBHOOK_ACTIONS),
                        send_payload=True,
                    )
                return int(hook.id)
        hook = self._api(
            f"registering a webhook for project {pid}",
            self.client.webhooks.create,
            url=url,
            project=pid,
            send_payload=True,
            send_for_all_actions=False,
            actions=list(WEBHOOK_ACTIONS),
            headers=dict(headers or {}),
        )
        return int(hook.id)

    def parse_webhook(self, payload: Mapping[str, Any]) -> WebhookEvent:
        """``parse_webhook`` with this project's classes and choices name; an event of another
        project comes back empty (acknowledge and ignore it)."""
        event = parse_webhook(payload, self.classes, choices_name=self._choices_name)
        if (
            event.project_id is not None
            and self.project_id is not None
            and event.project_id != self.project_id
        ):
            return WebhookEvent(event.action, event.project_id)
        return event

    # -- send ----------------------------------------------------------------------------
    def send(self, requests: Sequence[LabelRequest]) -> None:
        """Create a task (with a prediction) for each item that has none yet. See ``push``."""
        self.push(requests)

    def push(self, requests: Sequence[LabelRequest]) -> SendResult:
        """``send`` with a report. Idempotent on the item id (see the module docstring).

        Requests for ``n`` items none of which has a task yet: one count per lookup chunk
        (~2,500 short ids) and one import per ``batch_size`` tasks.
        """
        t0 = time.perf_counter()
        unique: dict[str, LabelRequest] = {}
        for r in requests:
            unique.setdefault(str(r.item.id), r)
        reqs = list(unique.values())
        for r in reqs:
            self._check_request(r)
        if not reqs:
            self.last_send = SendResult(0, 0, 0, 0)
            return self.last_send
        pid = self.ensure_project()
        scores = dict(zip(unique, queue_scores([r.score for r in reqs]), strict=True))
        existing, removed = self._present(list(unique))
        todo = [r for r in reqs if str(r.item.id) not in existing]
        created: list[int] = []
        for start in range(0, len(todo), self.batch_size):
            batch = todo[start : start + self.batch_size]
            tasks = [self._task(r, scores[str(r.item.id)]) for r in batch]
            ids, retried = self._import_batch(pid, tasks)
            created.extend(ids)
            if ids and self._model_version is None:
                # Label Studio 1.23.2 gives a project without a model version the one of the
                # last prediction it imports, "undefined" when that has none
                # (tasks/serializers.py); after a retry, which one is not known here
                last = batch[-1].model_version or "undefined"
                self._model_version = _VERSION_UNKNOWN if retried else last
            if retried or self.check_after_import:
                removed += self._dedupe([str(r.item.id) for r in batch], all_present=True)
        if self.set_model_version_on_send:
            versions = {r.model_version for r in reqs if r.model_version}
            if len(versions) == 1:
                (version,) = versions
                if version != self._model_version:
                    self.set_model_version(version)
        self.last_send = SendResult(
            requested=len(reqs),
            imported=len(created),
            already_present=len(existing),
            duplicates_removed=removed,
            task_ids=tuple(created),
            seconds=time.perf_counter() - t0,
        )
        return self.last_send

    def _check_request(self, r: LabelRequest) -> None:
        if not isinstance(r.item.text, str) or not r.item.text.strip():
            raise DataError(
                f"Item {r.item.id!r} has an empty text; Label Studio would show an empty task.",
                "drop or fix that item in the source data",
            )
        if r.prediction is not None and r.prediction not in self.classes:
            raise DataError(
                f"Request for item {r.item.id!r} predicts {r.prediction!r}, which is not one of "
                f"the classes {list(self.classes)}.",
                "train and predict over the same class list the Label Studio project uses",
            )

    def _task(self, r: LabelRequest, queue_score: float) -> dict[str, Any]:
        result: list[dict[str, Any]] = []
        if r.prediction is not None:
            result = [
                {
                    "from_name": self._choices_name,
                    "to_name": self._to_name,
                    "type": "choices",
                    "value": {"choices": [r.prediction]},
                }
            ]
        prediction: dict[str, Any] = {"result": result, "score": queue_score}
        if r.model_version:
            prediction["model_version"] = r.model_version
        return {
            "data": {self.text_field: r.item.text, ID_FIELD: str(r.item.id), KIND_FIELD: r.kind},
            "predictions": [prediction],
        }

    def _import_batch(
        self, pid: int, tasks: list[dict[str, Any]], attempts: int = 3
    ) -> tuple[list[int], bool]:
        """Import without the SDK's retries. After a transient failure (transport error, 5xx,
        408/409/429) look up what landed anyway and import only the rest; other refusals
        (e.g. 400) are raised at once. Returns the ids of the tasks of ``tasks`` and whether
        a retry happened (the caller then checks the batch for duplicates)."""
        pending = tasks
        created: list[int] = []
        for attempt in range(attempts):
            try:
                with self._call(f"importing {len(pending)} tasks into project {pid}"):
                    resp = self.client.projects.import_tasks(
                        id=pid,
                        request=cast(Any, pending),  # plain dicts: the SDK sends them as is
                        return_task_ids=True,
                        request_options={"max_retries": 0},
                    )
            except _TransientError:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.5 * 2**attempt)
                landed = self._lookup(
                    [t["data"][ID_FIELD] for t in pending], skip_if_count=lambda n, k: n == 0
                )
                created.extend(int(t["id"]) for t in landed)
                landed_ids = {str(t["data"][ID_FIELD]) for t in landed}
                pending = [t for t in pending if t["data"][ID_FIELD] not in landed_ids]
                if not pending:
                    return created, True
                continue
            created.extend(int(i) for i in (getattr(resp, "task_ids", None) or []))
            return created, attempt > 0
        return created, True

    def remove_duplicates(self, item_ids: Sequence[str]) -> int:
        """Delete extra tasks of the same item among ``item_ids``; returns how many.

        Keeps the task with annotations (the lowest id of those) or else the lowest id; a task
        that has annotations is never deleted. ``push`` runs this on a batch whose import was
        retried (or on every batch with ``check_after_import``).
        """
        return self._dedupe(item_ids, all_present=False)

    def _dedupe(self, item_ids: Sequence[str], *, all_present: bool) -> int:
        """``all_present``: every id is known to have a task (just imported), so a chunk whose
        match count equals its size has no duplicate and is not listed."""
        return self._remove_extra(
            self._lookup(item_ids, skip_if_count=(lambda n, k: n <= k) if all_present else None)
        )

    def _remove_extra(self, tasks: Sequence[Mapping[str, Any]]) -> int:
        """Delete every task of ``tasks`` whose item has another one (see
        ``remove_duplicates`` for which stays); returns how many were deleted."""
        tasks_by_item: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
        for task in tasks:
            tasks_by_item[str(task["data"][ID_FIELD])].append(task)
        removed = 0
        for same in tasks_by_item.values():
            if len(same) < 2:
                continue
            annotated = [t for t in same if _n_annotations(t) > 0]
            keep = min(annotated or same, key=lambda t: int(t["id"]))
            for t in same:
                if t is keep or _n_annotations(t) > 0:
                    continue
                self._api(
                    f"deleting duplicate task {t['id']}", self.client.tasks.delete, id=t["id"]
                )
                removed += 1
        return removed

    def _present(self, item_ids: Sequence[str]) -> tuple[set[str], int]:
        """The ids among ``item_ids`` that have a task, and how many extra tasks of theirs
        were deleted (an item found with more than one task). Listed only where counted."""
        tasks = self._lookup(item_ids, skip_if_count=lambda n, k: n == 0)
        return {str(t["data"][ID_FIELD]) for t in tasks}, self._remove_extra(tasks)

    def _lookup(
        self,
        item_ids: Sequence[str],
        skip_if_count: Callable[[int, int], bool] | None = None,
    ) -> list[Mapping[str, Any]]:
        """Tasks (task_only fields) whose ``data.alloop_id`` is one of ``item_ids``.

        Listing costs ~1 ms per task on the server (serialization); counting the matches of a
        chunk costs about one request (~20 ms, ~65 ms on a kept-alive connection to Label
        Studio's own server). With ``skip_if_count(matches, chunk_size)`` a chunk is counted
        first and not listed when the predicate holds (e.g. no match at all). Chunks are as
        large as the GET URL allows (``_LOOKUP_URL_CHARS``); after a refusal of a long URL
        (a proxy's or another WSGI server's request-line limit) they shrink to
        ``_SAFE_LOOKUP_URL_CHARS`` for the rest of this tool's life.
        """
        pid = self.ensure_project()
        ids = list(dict.fromkeys(item_ids))
        out: list[Mapping[str, Any]] = []
        start = 0
        while start < len(ids):
            chunk = _next_chunk(ids, start, self._lookup_url_chars)
            flt = {
                "filter": f"filter:tasks:data.{ID_FIELD}",
                "operator": "in_list",
                "type": "String",
                "value": chunk,
            }
            try:
                if skip_if_count is not None:
                    n = self._count(pid, [flt], what="counting sent items")
                    if skip_if_count(n, len(chunk)):
                        start += len(chunk)
                        continue
                found = list(
                    self._list_tasks(pid, [flt], fields="task_only", what="looking up sent items")
                )
            except _Refused as err:
                if err.status not in _URL_TOO_LONG or self._lookup_url_chars <= (
                    _SAFE_LOOKUP_URL_CHARS
                ):
                    raise
                self._lookup_url_chars = _SAFE_LOOKUP_URL_CHARS
                continue
            out.extend(found)
            start += len(chunk)
        return out

    def _count(self, pid: int, filters: list[dict[str, Any]], *, what: str) -> int:
        query = json.dumps({"filters": {"conjunction": "and", "items": filters}})
        pager: Any = self._api(
            f"{what} (project {pid})",
            self.client.tasks.list,
            project=pid,
            fields="task_only",
            page=1,
            page_size=1,
            query=query,
        )
        total = getattr(pager.response, "total", None)
        if not isinstance(total, int):
            raise LabelingToolError(
                f"Label Studio at {self.url}: the task list of project {pid} has no 'total' count.",
                "check the server is Label Studio 1.23.x",
            )
        return total

    # -- fetch ---------------------------------------------------------------------------
    def fetch_labels(self, since: datetime | None) -> LabelSnapshot:
        """The current labels of every task changed after ``since`` (all tasks when None).
        Rejections and the next cursor are kept in ``last_rejections`` / ``last_cursor``."""
        return self.fetch(since).snapshot

    def fetch(self, since: datetime | None) -> FetchResult:
        """Poll Label Studio; see the module docstring for the window and the cursor."""
        if since is not None and (since.tzinfo is None or since.utcoffset() is None):
            raise DataError(
                f"fetch_labels(since=...) needs a timezone-aware datetime; got naive {since}.",
                "pass datetime.now(UTC) style values (or the cursor of the previous fetch)",
            )
        pid = self.ensure_project()
        filters: list[dict[str, Any]] = []
        if since is not None:
            start = (since - self.overlap).astimezone(UTC).replace(tzinfo=None)
            filters.append(
                {
                    "filter": "filter:tasks:updated_at",
                    "operator": "greater",
                    "type": "Datetime",
                    "value": start.strftime(_LS_DATETIME),
                }
            )
        item_ids: dict[str, None] = {}
        labels: list[Label] = []
        rejections: list[Rejection] = []
        cursor = since
        n_tasks = 0
        for task in self._list_tasks(pid, filters, fields="all", what="fetching annotations"):
            n_tasks += 1
            updated = _parse_time(task.get("updated_at"))
            if updated is not None and (cursor is None or updated > cursor):
                cursor = updated
            anns = [a for a in (task.get("annotations") or []) if isinstance(a, Mapping)]
            item_id, why = task_item_id(task)
            if item_id is None:
                rejections.extend(
                    Rejection(None, escape_forbidden(str(a.get("id", ""))), why) for a in anns
                )
                continue
            item_ids[item_id] = None
            for ann in anns:
                out = annotation_to_label(ann, item_id, self.classes, self._choices_name)
                (labels if isinstance(out, Label) else rejections).append(out)  # type: ignore[arg-type]
        result = FetchResult(
            snapshot=LabelSnapshot(
                source=SOURCE,
                item_ids=tuple(item_ids),
                labels=tuple(labels),
                cursor=cursor,
                rejections=tuple(
                    LabelRejection(r.item_id, SOURCE, r.annotation_id, r.reason)
                    for r in rejections
                    if r.item_id is not None
                ),
            ),
            rejections=tuple(rejections),
            cursor=cursor,
            tasks_seen=n_tasks,
        )
        self.last_rejections = result.rejections
        self.last_cursor = result.cursor
        return result

    def _list_tasks(
        self, pid: int, filters: list[dict[str, Any]], *, fields: str, what: str
    ) -> Iterator[Mapping[str, Any]]:
        """All tasks matching ``filters``, ordered by id, walked by ``id > last`` pages."""

        def page(query: str, last_id: int) -> list[dict[str, Any]]:
            pager: Any = self._api(
                f"{what} (tasks of project {pid} after id {last_id})",
                self.client.tasks.list,
                project=pid,
                fields=fields,
                page=1,
                page_size=self.page_size,
                query=query,
            )
            return [_as_dict(t) for t in (pager.items or [])]

        return walk_tasks(filters, self.page_size, page)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _as_dict(obj: Any) -> dict[str, Any]:
    if isinstance(obj, Mapping):
        return dict(obj)
    dump = getattr(obj, "model_dump", None)
    if dump is None:
        raise LabelingToolError(
            f"Label Studio returned a {type(obj).__name__} where a task was expected.",
            "check label-studio-sdk is 2.1.2",
        )
    return dict(dump(mode="json", by_alias=True))


def _n_annotations(task: Mapping[str, Any]) -> int:
    return int(task.get("total_annotations") or 0) + int(task.get("cancelled_annotations") or 0)


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _user(value: Any) -> str | None:
    if isinstance(value, Mapping):
        value = value.get("id", value.get("email"))
    return None if value is None else str(value)


def _next_chunk(ids: list[str], start: int, max_url_chars: int) -> list[str]:
    """The ids from ``start`` on whose ``in_list`` filter keeps a lookup's GET URL (JSON,
    percent-encoded) within ``max_url_chars``; at least one id."""
    budget = max_url_chars - _LOOKUP_URL_OVERHEAD
    end = start
    while end < len(ids) and end - start < _MAX_LOOKUP_IDS:
        cost = len(quote(json.dumps(ids[end]), safe="")) + 6  # the id and "%2C%20"
        if end > start and cost > budget:
            break
        budget -= cost
        end += 1
    return ids[start:end]


def _detail(body: Any) -> str:
    if isinstance(body, Mapping):
        for key in ("detail", "validation_errors", "message", "error"):
            if body.get(key):
                return str(body[key])[:500]
    text = str(body)
    return text[:500] + ("..." if len(text) > 500 else "")


def _fix_for_status(status: int | None) -> str:
    if status in (401, 403):
        return (
            "check the API token: a legacy token needs legacy tokens enabled for the "
            "organization (LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true when it is created), or use "
            "a personal access token"
        )
    if status == 404:
        return "the project or task may have been deleted: check the project id / title setting"
    if status is not None and status >= 500:
        return "Label Studio failed internally: see its server log"
    return "see the message above; the request was refused as sent"

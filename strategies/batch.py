"""Strategy contract v2: strategies over more than one model's probabilities.

A strategy declares what it needs (:data:`INPUTS`) and gets a :class:`SelectionInputs` holding
exactly that; it either *scores* items (``score(inputs, rng) -> (n,)``, then the seeded
:func:`strategies.selection.top_k`) or *selects* a whole batch (``select(inputs, k, rng) ->
(indices, scores | None)``), for strategies whose picks depend on each other (diversity).

Shapes: ``proba (n, C)``, ``proba_samples (n, T, C)`` (T committee members or MC-dropout
passes), ``embeddings (n, d)`` of the pool (L2-normalised rows), ``labeled_embeddings (m, d)``,
``labels (m,)`` (class indices) and ``labeled_proba (m, C)`` (the model's probabilities) of the
training set. Pure numpy (scikit-learn's k-means for
the clustered ones): no model calls, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from strategies.errors import StrategyInputError
from strategies.measures import margin, require_generator, validate_proba
from strategies.selection import _as_embeddings, _positive_int, top_k

#: What a strategy may ask for.
INPUTS = frozenset(
    {"proba", "proba_samples", "embeddings", "labeled_embeddings", "labels", "labeled_proba"}
)
_CHUNK = 4096
_EPS = 1e-12
#: The pairwise work (candidates x picks) the greedy batch strategies (core-set, BADGE) do at
#: most: above it they choose among a candidate set of ``WORK_CAP // k`` items (at least
#: ``MIN_CANDIDATES``), so one selection from a pool of millions stays within seconds.
WORK_CAP = 10_000_000
MIN_CANDIDATES = 10_000
#: Points x clusters x dimensions above which k-means runs on a 32-d PCA projection.
KMEANS_WORK_CAP = 2_000_000_000


def candidate_count(n: int, k: int) -> int:
    """How many candidates a greedy batch strategy considers for ``k`` picks from ``n``."""
    return min(n, max(k, MIN_CANDIDATES, WORK_CAP // max(1, k)))


def _candidates(
    n: int, k: int, rng: np.random.Generator, scores: np.ndarray | None = None
) -> np.ndarray | None:
    """The candidate set (sorted indices) when ``n`` is over :func:`candidate_count`: the
    best by ``scores``, or a uniform random sample (as baal's ``max_sample``); None: all."""
    c = candidate_count(n, k)
    if c >= n:
        return None
    if scores is not None:
        return np.sort(top_k(scores, c, rng))
    return np.sort(rng.choice(n, size=c, replace=False))


@dataclass(frozen=True)
class SelectionInputs:
    """The pool's inputs to a strategy; a field is None unless the strategy needs it."""

    proba: np.ndarray | None = None
    proba_samples: np.ndarray | None = None
    embeddings: np.ndarray | None = None
    labeled_embeddings: np.ndarray | None = None
    labels: np.ndarray | None = None
    labeled_proba: np.ndarray | None = None  # the current model's probabilities on the labels
    size: int | None = None  # the number of pool items (a strategy may need nothing else)

    def need(self, name: str, who: str) -> np.ndarray:
        value = getattr(self, name)
        if value is None:
            raise StrategyInputError(
                f"{who}: input {name!r}",
                expected="an array (the strategy declares it in `needs`)",
                found="None",
                fix=f"build the inputs the strategy needs: {name}",
            )
        return np.asarray(value)

    @property
    def n(self) -> int:
        if self.size is not None:
            return int(self.size)
        for name in ("proba", "proba_samples", "embeddings"):
            value = getattr(self, name)
            if value is not None:
                return int(np.asarray(value).shape[0])
        return 0


# -- committee / Bayesian measures over proba_samples (n, T, C) -----------------------------


def _samples(inputs: SelectionInputs, who: str) -> np.ndarray:
    s = inputs.need("proba_samples", who)
    if s.ndim != 3 or s.shape[1] < 2 or s.shape[2] < 2:
        raise StrategyInputError(
            f"{who}: proba_samples",
            expected="shape (n_items, n_members >= 2, n_classes >= 2)",
            found=f"shape {s.shape}",
            fix="pass one probability matrix per committee member / dropout pass, stacked on axis 1",
        )
    n, t, c = s.shape
    validate_proba(s.reshape(n * t, c))
    return s.astype(np.float64, copy=False)


def _entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    return -np.sum(p * np.log(np.clip(p, _EPS, 1.0)), axis=axis)


def bald(inputs: SelectionInputs, rng: np.random.Generator | None = None) -> np.ndarray:
    """Mutual information between the prediction and the model: ``H[mean_t p_t] - mean_t
    H[p_t]`` ``(n,)``, >= 0. Houlsby et al., "Bayesian active learning for classification and
    preference learning", 2011; Gal, Islam & Ghahramani, "Deep Bayesian active learning with
    image data", ICML 2017."""
    out = np.empty(inputs.n, dtype=np.float64)
    s = _samples(inputs, "bald")
    for a in range(0, s.shape[0], _CHUNK):
        chunk = s[a : a + _CHUNK]
        out[a : a + _CHUNK] = _entropy(chunk.mean(axis=1)) - _entropy(chunk).mean(axis=1)
    return np.maximum(out, 0.0)


def vote_entropy(inputs: SelectionInputs, rng: np.random.Generator | None = None) -> np.ndarray:
    """Entropy of the committee's hard votes ``(n,)``. Dagan & Engelson, "Committee-based
    sampling for training probabilistic classifiers", ICML 1995."""
    s = _samples(inputs, "vote-entropy")
    n, t, c = s.shape
    out = np.empty(n, dtype=np.float64)
    for a in range(0, n, _CHUNK):
        votes = np.argmax(s[a : a + _CHUNK], axis=2)
        counts = np.stack([(votes == j).sum(axis=1) for j in range(c)], axis=1) / t
        out[a : a + _CHUNK] = _entropy(counts)
    return out


def kl_consensus(inputs: SelectionInputs, rng: np.random.Generator | None = None) -> np.ndarray:
    """Mean KL divergence of each member from the consensus ``(n,)``. McCallum & Nigam,
    "Employing EM and pool-based active learning for text classification", ICML 1998."""
    s = _samples(inputs, "kl-consensus")
    out = np.empty(s.shape[0], dtype=np.float64)
    for a in range(0, s.shape[0], _CHUNK):
        chunk = s[a : a + _CHUNK]
        mean = chunk.mean(axis=1, keepdims=True)
        ratio = np.log(np.clip(chunk, _EPS, 1.0)) - np.log(np.clip(mean, _EPS, 1.0))
        out[a : a + _CHUNK] = np.sum(chunk * ratio, axis=2).mean(axis=1)
    return np.maximum(out, 0.0)


# -- density ----------------------------------------------------------------------------------


def density_margin(
    inputs: SelectionInputs, rng: np.random.Generator | None = None, beta: float = 1.0
) -> np.ndarray:
    """Information density: margin uncertainty times the item's mean cosine similarity to the
    pool (shifted to [0, 1]) to the power ``beta`` ``(n,)``, so outliers rank lower. Settles &
    Craven, "An analysis of active learning strategies for sequence labeling tasks", EMNLP
    2008. O(n d): the mean similarity of unit rows is a dot product with the pool's mean."""
    emb = _as_embeddings(inputs.need("embeddings", "density-margin"))
    unc = margin(inputs.need("proba", "density-margin"))
    if emb.shape[0] == 0:
        return unc
    centre = emb.mean(axis=0)
    density = np.clip((emb @ centre + 1.0) / 2.0, 0.0, 1.0)
    return unc * density**beta


def contrastive(
    inputs: SelectionInputs, k: int, rng: np.random.Generator, neighbours: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Contrastive active learning (CAL): the items whose prediction differs most from the
    model's predictions on their nearest labeled neighbours, ``mean_j KL(p(x_j) || p(x))``
    over the ``neighbours`` labeled items most similar to ``x`` (cosine). Margatina et al.,
    "Active learning by acquiring contrastive examples", EMNLP 2021. An item that looks like
    labeled items but is predicted otherwise sits on a boundary the labels have not settled;
    an item that is merely ambiguous everywhere (a noisy, mixed review) does not stand out.
    O(n m d); over :data:`WORK_CAP` pairs (pool x labeled) it scores the most uncertain
    :func:`candidate_count` items by margin only. Without labeled items: margin."""
    generator = require_generator(rng, "contrastive")
    count = _positive_int(k, "contrastive: k")
    proba = inputs.need("proba", "contrastive")
    validate_proba(proba)
    unc = margin(proba)
    n = proba.shape[0]
    emb = _as_embeddings(inputs.need("embeddings", "contrastive"))
    lab = inputs.need("labeled_embeddings", "contrastive")
    lab_p = inputs.need("labeled_proba", "contrastive")
    if n == 0:
        return np.empty(0, dtype=np.intp), np.empty(0)
    if lab.shape[0] == 0:
        return top_k(unc, count, generator), unc
    lab = _as_embeddings(lab)
    if lab_p.shape != (lab.shape[0], proba.shape[1]) or emb.shape[0] != n:
        raise StrategyInputError(
            "contrastive: inputs",
            expected=f"labeled_proba of shape ({lab.shape[0]}, {proba.shape[1]}) and "
            f"{n} pool embeddings",
            found=f"labeled_proba {lab_p.shape}, embeddings {emb.shape}",
            fix="pass the model's probabilities on the labeled items and the pool's embeddings",
        )
    validate_proba(lab_p)
    lab_p = lab_p.astype(np.float64, copy=False)
    neg_h = -_entropy(lab_p)  # sum_c p log p of each labeled item
    cand = None
    if n * lab.shape[0] > WORK_CAP * 10:
        cand = _candidates(n, count, generator, unc)
    rows = np.arange(n) if cand is None else cand
    knn = min(int(neighbours), lab.shape[0])
    kl = np.empty(rows.shape[0], dtype=np.float64)
    step = max(64, min(_CHUNK, 4_000_000 // lab.shape[0]))  # (step, m) blocks, ~48 MB
    for a in range(0, rows.shape[0], step):
        r = rows[a : a + step]
        sim = emb[r] @ lab.T
        nn = np.argpartition(-sim, knn - 1, axis=1)[:, :knn] if knn < lab.shape[0] else None
        logp = np.log(np.clip(proba[r].astype(np.float64), _EPS, 1.0))
        cross = lab_p @ logp.T  # (m, b): sum_c p_j log p_i
        if nn is None:
            kl[a : a + step] = (neg_h[:, None] - cross).mean(axis=0)
        else:
            picked = np.take_along_axis(cross.T, nn, axis=1)
            kl[a : a + step] = (neg_h[nn] - picked).mean(axis=1)
    kl = np.maximum(kl, 0.0)
    if cand is None:
        return top_k(kl, count, generator), kl
    scores = np.zeros(n, dtype=np.float64)
    scores[cand] = kl + _EPS  # the candidates rank above the rest
    return cand[top_k(kl, count, generator)], scores


# -- stochastic batch acquisition ----------------------------------------------------------


def power_margin(
    inputs: SelectionInputs, k: int, rng: np.random.Generator, beta: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Power sampling: ``k`` items drawn without replacement with probability proportional to
    ``margin ** beta`` (Gumbel-top-k on ``beta * log score``). Kirsch et al., "Stochastic batch
    acquisition: a simple baseline for deep active learning", TMLR 2023."""
    generator = require_generator(rng, "power-margin")
    scores = margin(inputs.need("proba", "power-margin"))
    keys = beta * np.log(np.maximum(scores, _EPS)) + generator.gumbel(size=scores.shape[0])
    idx = top_k(keys, k, generator)
    return idx, scores


# -- diversity ------------------------------------------------------------------------------


def _sq_dist_to(points: np.ndarray, centre: np.ndarray, norms: np.ndarray) -> np.ndarray:
    return np.maximum(norms - 2.0 * (points @ centre) + float(centre @ centre), 0.0)


def coreset(
    inputs: SelectionInputs, k: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy k-centre: repeatedly the pool item farthest from every labeled item and every
    item picked so far. Sener & Savarese, "Active learning for convolutional neural networks:
    a core-set approach", ICLR 2018. Scores: the distance to the nearest centre when picked.
    O(n (m + k) d) time, O(n) extra memory; over :data:`WORK_CAP` it picks from a uniform
    random candidate set of :func:`candidate_count` items (the labeled centres stay whole)."""
    generator = require_generator(rng, "coreset")
    count = _positive_int(k, "coreset: k")
    full = _as_embeddings(inputs.need("embeddings", "coreset"))
    if full.shape[0] == 0:
        return np.empty(0, dtype=np.intp), np.empty(0)
    cand = _candidates(full.shape[0], count, generator)
    emb = full if cand is None else full[cand]
    n = emb.shape[0]
    count = min(count, n)
    norms = np.einsum("ij,ij->i", emb, emb)
    nearest = np.full(n, np.inf)
    lab = inputs.labeled_embeddings
    if lab is not None and len(lab):
        lab = _as_embeddings(lab)
        lab_norms = np.einsum("ij,ij->i", lab, lab)
        for a in range(0, n, _CHUNK):
            block = emb[a : a + _CHUNK]
            d = norms[a : a + _CHUNK, None] - 2.0 * block @ lab.T + lab_norms[None, :]
            nearest[a : a + _CHUNK] = np.maximum(d.min(axis=1), 0.0)
    picks = np.empty(count, dtype=np.intp)
    gaps = np.empty(count, dtype=np.float64)
    for r in range(count):
        if np.isinf(nearest).all():  # no labeled set: start at a random item
            j = int(generator.integers(n))
        else:
            best = nearest.max()
            ties = np.flatnonzero(nearest == best)
            j = int(ties[0] if ties.shape[0] == 1 else generator.choice(ties))
        picks[r], gaps[r] = j, float(np.sqrt(nearest[j])) if np.isfinite(nearest[j]) else np.inf
        nearest = np.minimum(nearest, _sq_dist_to(emb, emb[j], norms))
        nearest[j] = -1.0  # never again
    finite = gaps[np.isfinite(gaps)]
    top = float(finite.max()) + 1.0 if finite.size else 1.0
    scores = np.zeros(full.shape[0], dtype=np.float64)
    if cand is not None:
        picks = cand[picks]
    scores[picks] = np.where(np.isfinite(gaps), gaps, top)  # a start without labels: first
    return picks, scores


def badge(
    inputs: SelectionInputs, k: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """k-means++ seeding over the gradient embeddings of a linear head at its own prediction,
    ``g = (p - onehot(argmax p)) ⊗ x``, so the batch is both uncertain (long gradients) and
    diverse. Ash et al., "Deep batch active learning by diverse, uncertain gradient lower
    bounds", ICLR 2020. Never builds the ``(n, C d)`` matrix: ``<g_i, g_j> = <a_i, a_j>
    <x_i, x_j>`` with ``a = p - onehot``. Scores: ``|g|`` of every item. Over
    :data:`WORK_CAP` the seeding runs over the :func:`candidate_count` items of longest
    gradient (the ones k-means++ would favour)."""
    generator = require_generator(rng, "badge")
    count = _positive_int(k, "badge: k")
    emb = _as_embeddings(inputs.need("embeddings", "badge"))
    proba = np.asarray(validate_proba(inputs.need("proba", "badge")), dtype=np.float64)
    n = emb.shape[0]
    if n == 0:
        return np.empty(0, dtype=np.intp), np.empty(0)
    count = min(count, n)
    a = proba.copy()
    a[np.arange(n), np.argmax(proba, axis=1)] -= 1.0
    a_norm = np.einsum("ij,ij->i", a, a)
    x_norm = np.einsum("ij,ij->i", emb, emb)
    all_g = a_norm * x_norm  # |g_i|^2
    cand = _candidates(n, count, generator, scores=all_g)
    if cand is not None:
        a, emb, n = a[cand], emb[cand], cand.shape[0]
    g_norm = all_g if cand is None else all_g[cand]
    picks: list[int] = []
    d2 = np.full(n, np.inf)
    first = int(np.argmax(g_norm)) if g_norm.max() > 0 else int(generator.integers(n))
    picks.append(first)
    taken = np.zeros(n, dtype=bool)
    taken[first] = True
    while len(picks) < count:
        j = picks[-1]
        dot = (a @ a[j]) * (emb @ emb[j])
        d2 = np.minimum(d2, np.maximum(g_norm - 2.0 * dot + g_norm[j], 0.0))
        weights = np.where(taken, 0.0, d2)
        total = weights.sum()
        if total <= 0:  # every item is a copy of a pick: fill at random
            rest = np.flatnonzero(~taken)
            j = int(generator.choice(rest))
        else:
            j = int(generator.choice(n, p=weights / total))
        picks.append(j)
        taken[j] = True
    idx = np.asarray(picks, dtype=np.intp)
    return (idx if cand is None else cand[idx]), np.sqrt(all_g)


def _kmeans_labels(emb: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    import warnings

    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.exceptions import ConvergenceWarning

    seed = int(rng.integers(0, 2**31 - 1))
    n = emb.shape[0]
    if n * k * emb.shape[1] > KMEANS_WORK_CAP and emb.shape[1] > 32:
        from sklearn.decomposition import PCA

        emb = PCA(n_components=32, random_state=seed, svd_solver="randomized").fit_transform(
            emb[:, :]
        )
    model = (
        KMeans(n_clusters=k, n_init=1, random_state=seed)
        if n < 20_000
        else MiniBatchKMeans(n_clusters=k, n_init=3, random_state=seed, batch_size=4096)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return np.asarray(model.fit_predict(emb), dtype=np.intp)


def _best_per_group(
    scores: np.ndarray, groups: np.ndarray, k: int, rng: np.random.Generator
) -> np.ndarray:
    """The best-scoring item of each group, groups by their best score, then the remaining
    places by score; ``min(k, n)`` indices."""
    order = top_k(scores, scores.shape[0], rng)  # all, best first, seeded ties
    _, first = np.unique(groups[order], return_index=True)
    leaders = order[np.sort(first)]
    if leaders.shape[0] >= k:
        return leaders[:k]
    rest = order[~np.isin(order, leaders)]
    return np.concatenate([leaders, rest[: k - leaders.shape[0]]])


def cluster_margin(
    inputs: SelectionInputs, k: int, rng: np.random.Generator, candidates: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Margin within clusters: the ``candidates * k`` most uncertain items (by margin) are
    clustered into ``k`` groups by k-means on their embeddings and the most uncertain of each
    group is asked. After Citovsky et al., "Batch active learning at scale" (Cluster-Margin),
    NeurIPS 2021, with k-means in place of their hierarchical clustering."""
    generator = require_generator(rng, "cluster-margin")
    count = _positive_int(k, "cluster-margin: k")
    emb = _as_embeddings(inputs.need("embeddings", "cluster-margin"))
    scores = margin(inputs.need("proba", "cluster-margin"))
    n = scores.shape[0]
    if n == 0:
        return np.empty(0, dtype=np.intp), scores
    if count >= n:
        return top_k(scores, n, generator), scores
    pool = top_k(scores, min(n, candidates * count), generator)
    groups = _kmeans_labels(emb[pool], count, generator)
    picked = _best_per_group(scores[pool], groups, count, generator)
    return pool[picked], scores


def class_balanced_margin(
    inputs: SelectionInputs, k: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Margin sampling with the batch split over the *predicted* classes in inverse
    proportion to their share of the labels, so rare classes are asked more (the most
    uncertain items within each class's quota; unused quota goes to the best remaining).
    After small-text's ClassBalancer (Schröder et al., "Small-text: active learning for text
    classification in python", EACL 2023 demo)."""
    generator = require_generator(rng, "class-balanced-margin")
    count = _positive_int(k, "class-balanced-margin: k")
    proba = inputs.need("proba", "class-balanced-margin")
    labels = inputs.need("labels", "class-balanced-margin")
    scores = margin(proba)
    n, c = proba.shape
    if n == 0:
        return np.empty(0, dtype=np.intp), scores
    count = min(count, n)
    quota, classes = _class_quotas(labels, c, count)
    pred = np.argmax(proba, axis=1)
    order = top_k(scores, n, generator)
    chosen: list[int] = []
    taken = np.zeros(n, dtype=bool)
    for cls in classes:
        members = order[pred[order] == cls][: quota[cls]]
        chosen.extend(int(i) for i in members)
        taken[members] = True
    rest = order[~taken[order]][: count - len(chosen)]
    return np.concatenate([np.asarray(chosen, dtype=np.intp), rest]), scores


def _class_quotas(labels: np.ndarray, c: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Places per class, in inverse proportion to ``1 + labels seen`` (floors, so they sum to
    at most ``count``), and the classes rarest first."""
    seen = np.bincount(np.asarray(labels, dtype=np.intp), minlength=c)[:c]
    want = 1.0 / (seen + 1.0)
    quota = np.floor(count * want / want.sum()).astype(int)
    return quota, np.argsort(-want, kind="stable")


def balanced_cluster_margin(
    inputs: SelectionInputs, k: int, rng: np.random.Generator, candidates: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Class-balanced quotas (as :func:`class_balanced_margin`) filled by cluster-margin: for
    a class with quota ``q``, the ``candidates * q`` most uncertain items predicted as that
    class are clustered into ``q`` groups and the most uncertain of each is asked; places
    left over go to the most uncertain remaining items. Balance for rare classes, diversity
    within each class (a combination of Citovsky et al. 2021 and small-text's ClassBalancer)."""
    who = "balanced-cluster-margin"
    generator = require_generator(rng, who)
    count = _positive_int(k, f"{who}: k")
    proba = inputs.need("proba", who)
    labels = inputs.need("labels", who)
    emb = _as_embeddings(inputs.need("embeddings", who))
    scores = margin(proba)
    n, c = proba.shape
    if emb.shape[0] != n:
        raise StrategyInputError(
            f"{who}: embeddings",
            expected=f"one row per pool item ({n})",
            found=f"{emb.shape[0]} rows",
            fix="pass the embeddings of the same pool as proba",
        )
    if n == 0:
        return np.empty(0, dtype=np.intp), scores
    count = min(count, n)
    if count == n:
        return top_k(scores, n, generator), scores
    quota, classes = _class_quotas(labels, c, count)
    pred = np.argmax(proba, axis=1)
    order = top_k(scores, n, generator)
    chosen: list[np.ndarray] = []
    taken = np.zeros(n, dtype=bool)
    for cls in classes:
        q = int(quota[cls])
        if q == 0:
            continue
        members = order[pred[order] == cls][: candidates * q]
        if members.shape[0] > q:
            groups = _kmeans_labels(emb[members], q, generator)
            members = members[_best_per_group(scores[members], groups, q, generator)]
        chosen.append(members)
        taken[members] = True
    used = sum(m.shape[0] for m in chosen)
    chosen.append(order[~taken[order]][: count - used])
    return np.concatenate(chosen).astype(np.intp, copy=False), scores


# -- cold start -----------------------------------------------------------------------------


def typiclust(
    embeddings: np.ndarray, k: int, rng: np.random.Generator, neighbours: int = 20
) -> np.ndarray:
    """TypiClust: k-means into ``k`` clusters and the most *typical* item of each (the inverse
    mean distance to its ``neighbours`` nearest neighbours within the cluster), largest
    clusters first. Hacohen, Dekel & Weinshall, "Active learning on a budget: opposite
    strategies suit high and low budgets", ICML 2022. ``(min(k, n),)`` indices."""
    generator = require_generator(rng, "typiclust")
    count = _positive_int(k, "typiclust: k")
    full = _as_embeddings(embeddings)
    if count >= full.shape[0]:
        return np.arange(full.shape[0], dtype=np.intp)
    # a cold start over millions: a uniform random sample of max(20 k, 20,000) items
    cap = max(20 * count, 2 * MIN_CANDIDATES)
    cand = (
        np.sort(generator.choice(full.shape[0], size=cap, replace=False))
        if full.shape[0] > cap
        else None
    )
    emb = full if cand is None else full[cand]
    n = emb.shape[0]
    groups = _kmeans_labels(emb, count, generator)
    typical = np.zeros(n, dtype=np.float64)
    for g in np.unique(groups):
        members = np.flatnonzero(groups == g)
        if members.shape[0] == 1:
            typical[members] = 1.0
            continue
        block = emb[members]
        sq = np.einsum("ij,ij->i", block, block)
        m = min(neighbours, members.shape[0] - 1)
        for a in range(0, members.shape[0], 1024):  # rows in chunks: memory 1024 x size
            rows = block[a : a + 1024]
            d = np.sqrt(
                np.maximum(sq[a : a + 1024, None] - 2.0 * rows @ block.T + sq[None, :], 0.0)
            )
            knn = np.partition(d, m, axis=1)[:, : m + 1]  # itself (0) and its m nearest
            typical[members[a : a + 1024]] = 1.0 / ((knn.sum(axis=1) - knn.min(axis=1)) / m + _EPS)
    sizes = np.bincount(groups, minlength=count)
    picks = _best_per_group(typical, groups, count, generator)
    picks = picks[np.argsort(-sizes[groups[picks]], kind="stable")]
    return picks if cand is None else cand[picks]

"""Which candidates to review next: the ``diverse`` queue order.

A round of reviews teaches a model most when its candidates are both uncertain and
unlike each other: twenty near-duplicates at the decision boundary say one thing
twenty times. :func:`diverse_order` clusters the candidates (k-means on whatever
describes them: image features, embeddings, or position and score) into as many
clusters as the round has reviews, takes the most uncertain candidate of each
cluster, most uncertain first, and then the rest by uncertainty.

Pure numpy and scikit-learn, so the review stage and the benchmarks share it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from geoscreen.review.records import Candidate

ROUND = 20  # reviews per round: clusters of the first part of the queue


def diverse_order(
    features: np.ndarray, uncertainty: np.ndarray, round_size: int = ROUND, seed: int = 0
) -> np.ndarray:
    """Indices of the rows in review order (see the module doc).

    ``features`` is ``(N, F)``; ``uncertainty`` ``(N,)``, higher = less sure (e.g.
    ``-|logit|``). Features are standardised per column before k-means.
    """
    n = len(uncertainty)
    by_uncertainty = np.argsort(-np.asarray(uncertainty, dtype=np.float64), kind="stable")
    k = min(round_size, n)
    if k <= 1:
        return by_uncertainty
    x = np.asarray(features, dtype=np.float64)
    scale = x.std(axis=0)
    x = (x - x.mean(axis=0)) / np.where(scale > 0, scale, 1.0)
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        clusters = KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(x)
    first: list[int] = []
    seen: set[int] = set()
    for i in by_uncertainty:  # the most uncertain row of each cluster
        if clusters[i] not in seen:
            seen.add(int(clusters[i]))
            first.append(int(i))
    chosen = set(first)
    rest = [int(i) for i in by_uncertainty if int(i) not in chosen]
    return np.array(first + rest, dtype=np.int64)


MAX_CLUSTERED = 5000  # beyond this many, the least uncertain simply follow by uncertainty


def diverse_candidates(
    found: Sequence[Candidate], round_size: int = ROUND, seed: int = 0
) -> list[Candidate]:
    """Candidates in ``diverse`` order: spread over space and size, nearest the threshold first.

    Every stored candidate passed its run's threshold, so the least sure are those with
    the lowest score. The store holds no image embeddings, so "appearance" here is the
    score and the site's size; position is the site's centre in local metres.
    """
    if not found:
        return []
    score = np.array([c.score if c.score is not None else np.inf for c in found])
    by_uncertainty = np.argsort(score, kind="stable")
    head, tail = by_uncertainty[:MAX_CLUSTERED], by_uncertainty[MAX_CLUSTERED:]
    lat = np.array([found[i].lat for i in head])
    lon = np.array([found[i].lon for i in head])
    metres = 111_320.0
    x = np.column_stack(
        [
            (lon - lon.mean()) * metres * np.cos(np.radians(lat.mean())),
            (lat - lat.mean()) * metres,
            np.nan_to_num(score[head], posinf=1.0),
            np.log1p([found[i].area_m2 or 0.0 for i in head]),
        ]
    )
    order = head[diverse_order(x, -np.nan_to_num(score[head], posinf=1.0), round_size, seed)]
    return [found[int(i)] for i in (*order, *tail)]

"""The diverse queue order: one uncertain candidate per cluster, then by uncertainty."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from geoscreen.review.loader import load_sites
from geoscreen.review.queue import diverse_order
from geoscreen.review.store import Store


def test_one_per_cluster_most_uncertain_first() -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = np.concatenate([c + rng.normal(0, 0.1, (10, 2)) for c in centres])
    uncertainty = np.linspace(1.0, 0.0, 30)  # the first cluster is the least sure
    order = diverse_order(x, uncertainty, round_size=3)
    assert sorted(order.tolist()) == list(range(30))
    assert order[:3].tolist() == [0, 10, 20]  # the most uncertain of each cluster
    assert order[3:].tolist() == [i for i in range(30) if i not in (0, 10, 20)]


def test_small_queues() -> None:
    assert diverse_order(np.zeros((1, 4)), np.array([0.5])).tolist() == [0]
    assert diverse_order(np.zeros((0, 4)), np.zeros(0)).tolist() == []


def test_store_diverse_order_reaches_every_area(store: Store, sites: Callable[..., Path]) -> None:
    """A sure site far from forty others still gets a place in the first round of twenty."""
    load_sites(store, sites(40, bounds=(70.0, 20.0, 70.5, 20.5)), actor="test")
    far = sites(1, run_id="run-2", first_site=100, bounds=(79.0, 29.0, 79.5, 29.5), seed=4)
    load_sites(store, far, actor="test")
    by_score = store.candidates(order="score")
    diverse = store.candidates(order="diverse")
    assert sorted(c.id for c in diverse) == sorted(c.id for c in by_score)
    assert diverse[0].score == min(c.score or 0 for c in by_score)  # least sure first
    assert not any(c.lon > 75 for c in by_score[-20:])  # not among the 20 least sure...
    assert any(c.lon > 75 for c in diverse[:20])  # ...yet reviewed in the first round
    assert [c.id for c in store.candidates(order="diverse", limit=5, offset=3)] == [
        c.id for c in diverse[3:8]
    ]

"""The diverse queue order: one uncertain candidate per cluster, then by uncertainty."""

from __future__ import annotations

import numpy as np

from geoscreen.review.queue import diverse_order


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

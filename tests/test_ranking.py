"""Ranking metrics: average precision against scikit-learn, threshold counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, precision_recall_fscore_support

from geoscreen.ranking import at_threshold, average_precision


@st.composite
def scored(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Scores with many ties (few distinct levels) and truth with at least one positive."""
    n = draw(st.integers(1, 60))
    levels = draw(st.integers(1, 8))
    scores = np.array(draw(st.lists(st.integers(0, levels), min_size=n, max_size=n))) / levels
    truth = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    truth[draw(st.integers(0, n - 1))] = True
    return scores.astype(np.float64), truth


@settings(deadline=None, max_examples=300)
@given(scored())
def test_average_precision_equals_sklearn_with_ties(case: tuple[np.ndarray, np.ndarray]) -> None:
    scores, truth = case
    assert average_precision(scores, truth) == pytest.approx(
        average_precision_score(truth, scores), abs=1e-12
    )


def test_average_precision_on_continuous_random_scores() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(2, 500))
        truth = rng.random(n) < rng.random()
        truth[0] = True
        scores = rng.random(n).astype(np.float32) + truth * rng.random()
        assert average_precision(scores, truth) == pytest.approx(
            average_precision_score(truth, scores), abs=1e-12
        )


def test_average_precision_known_values() -> None:
    # Perfect ranking, reversed ranking, all tied.
    assert average_precision(np.array([0.9, 0.8, 0.1]), np.array([1, 1, 0])) == 1.0
    # Positive ranked last of 4: precision 1/4 at recall 1.
    assert average_precision(np.array([0.9, 0.8, 0.7, 0.1]), np.array([0, 0, 0, 1])) == 0.25
    # All scores equal: AP is the positive rate.
    assert average_precision(np.zeros(5), np.array([1, 0, 1, 0, 0])) == pytest.approx(0.4)
    # Input order does not matter.
    rng = np.random.default_rng(1)
    scores, truth = rng.random(40), rng.random(40) < 0.3
    perm = rng.permutation(40)
    assert average_precision(scores[perm], truth[perm]) == average_precision(scores, truth)


def test_average_precision_without_positives_is_nan() -> None:
    assert math.isnan(average_precision(np.array([0.1, 0.2]), np.array([False, False])))
    assert math.isnan(average_precision(np.array([]), np.array([], dtype=bool)))


@settings(deadline=None, max_examples=200)
@given(scored(), st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0, 1.5]))
def test_at_threshold_counts(case: tuple[np.ndarray, np.ndarray], threshold: float) -> None:
    scores, truth = case
    m = at_threshold(scores, truth, threshold)
    predicted = scores >= threshold
    assert m.tp == int(np.sum(predicted & truth))
    assert m.fp == int(np.sum(predicted & ~truth))
    assert m.fn == int(np.sum(~predicted & truth))
    assert m.tn == int(np.sum(~predicted & ~truth))
    assert m.tp + m.fp + m.fn + m.tn == scores.size
    p, r, f, _ = precision_recall_fscore_support(
        truth, predicted, average="binary", zero_division=0
    )
    assert (m.precision, m.recall, m.f1) == pytest.approx((p, r, f))
    assert m.threshold == threshold


def test_at_threshold_example_and_dict() -> None:
    m = at_threshold(np.array([0.9, 0.6, 0.5, 0.2]), np.array([1, 0, 1, 1]), 0.5)
    assert (m.tp, m.fp, m.fn, m.tn) == (2, 1, 1, 0)
    assert m.precision == pytest.approx(2 / 3) and m.recall == pytest.approx(2 / 3)
    d = m.as_dict()
    assert d["tp"] == 2.0 and d["threshold"] == 0.5 and set(d) >= {"precision", "recall", "f1"}
    nothing = at_threshold(np.array([0.1, 0.2]), np.array([0, 1]), 0.9)
    assert (nothing.precision, nothing.recall, nothing.f1) == (0.0, 0.0, 0.0)

"""Tabular learners as torch modules: fitted by scikit-learn, stored as tensors.

scikit-learn fits the heads that score tile features (a regularised logistic
regression, gradient-boosted trees) and the calibration on top; this module copies
what they learnt into buffers of small torch modules. A model directory then holds
only tensors (``model.pt``, loaded with ``weights_only``: never a pickle, which could
run code), screening needs no scikit-learn, and the heads score whole batches in the
same loop as a CNN.

- :class:`LinearHead`: standardise, then one linear layer (a logistic regression).
- :class:`TreeEnsembleHead`: the trees of a ``HistGradientBoostingClassifier``,
  walked for a whole batch at once, one tree level per step.
- :class:`PlattCalibrator`: ``sigmoid(a * raw + b)``, fitted on out-of-fold scores;
  strictly increasing, so it never reorders tiles.

Each head returns a raw score (a logit); ``from_*`` build a head from a fitted
estimator and ``from_state`` from a saved state dict.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn


def _buffer(module: nn.Module, name: str, value: Any, dtype: torch.dtype) -> None:
    module.register_buffer(name, torch.as_tensor(np.asarray(value), dtype=dtype).clone())


class LinearHead(nn.Module):
    """``((x - mean) / scale) @ coef + intercept``: a fitted logistic regression."""

    mean: torch.Tensor
    scale: torch.Tensor
    coef: torch.Tensor
    intercept: torch.Tensor

    def __init__(self, n_features: int) -> None:
        super().__init__()
        _buffer(self, "mean", np.zeros(n_features), torch.float32)
        _buffer(self, "scale", np.ones(n_features), torch.float32)
        _buffer(self, "coef", np.zeros(n_features), torch.float32)
        _buffer(self, "intercept", np.zeros(()), torch.float32)

    @classmethod
    def from_sklearn(cls, mean: np.ndarray, scale: np.ndarray, estimator: Any) -> LinearHead:
        """From a ``StandardScaler``'s ``mean``/``scale`` and a fitted ``LogisticRegression``."""
        head = cls(len(mean))
        head.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        head.scale.copy_(torch.as_tensor(np.where(scale > 0, scale, 1.0), dtype=torch.float32))
        head.coef.copy_(torch.as_tensor(estimator.coef_.ravel(), dtype=torch.float32))
        head.intercept.copy_(torch.as_tensor(float(estimator.intercept_[0])))
        return head

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], prefix: str) -> LinearHead:
        return cls(int(state[prefix + "coef"].numel()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x.float() - self.mean) / self.scale
        return z @ self.coef + self.intercept


class TreeEnsembleHead(nn.Module):
    """The trees of a fitted ``HistGradientBoostingClassifier`` (binary), as flat arrays.

    Node ``i`` splits on ``feature[i]``: values ``<= threshold[i]`` go to ``left[i]``,
    others to ``right[i]``; leaves hold ``value[i]``. The raw score is ``baseline`` plus
    the sum of the leaf values reached, one per tree (scikit-learn's
    ``decision_function``).
    """

    feature: torch.Tensor
    threshold: torch.Tensor
    left: torch.Tensor
    right: torch.Tensor
    value: torch.Tensor
    is_leaf: torch.Tensor
    roots: torch.Tensor
    baseline: torch.Tensor

    def __init__(self, n_nodes: int, n_trees: int, depth: int) -> None:
        super().__init__()
        self.depth = depth
        _buffer(self, "feature", np.zeros(n_nodes), torch.int64)
        _buffer(self, "threshold", np.zeros(n_nodes), torch.float64)
        _buffer(self, "left", np.zeros(n_nodes), torch.int64)
        _buffer(self, "right", np.zeros(n_nodes), torch.int64)
        _buffer(self, "value", np.zeros(n_nodes), torch.float64)
        _buffer(self, "is_leaf", np.ones(n_nodes), torch.bool)
        _buffer(self, "roots", np.zeros(n_trees), torch.int64)
        _buffer(self, "baseline", np.zeros(()), torch.float64)

    @classmethod
    def from_sklearn(cls, estimator: Any) -> TreeEnsembleHead:
        """Copy the trees of a fitted binary ``HistGradientBoostingClassifier``.

        Reads its fitted predictors (``_predictors``, a private attribute whose node
        layout scikit-learn has kept since 0.21); the tests check that the copy scores
        exactly as ``decision_function`` does.
        """
        if getattr(estimator, "is_categorical_", None) is not None and np.any(
            estimator.is_categorical_
        ):
            raise ValueError("categorical splits are not supported")
        nodes = [p[0].nodes for p in estimator._predictors]
        offsets = np.cumsum([0] + [len(n) for n in nodes[:-1]])
        flat = np.concatenate(nodes)
        shift = np.repeat(offsets, [len(n) for n in nodes])
        head = cls(len(flat), len(nodes), int(flat["depth"].max()) if len(flat) else 0)
        head.feature.copy_(torch.as_tensor(flat["feature_idx"].astype(np.int64)))
        head.threshold.copy_(torch.as_tensor(flat["num_threshold"].astype(np.float64)))
        leaf = flat["is_leaf"].astype(bool)
        head.left.copy_(torch.as_tensor(np.where(leaf, 0, flat["left"] + shift).astype(np.int64)))
        head.right.copy_(torch.as_tensor(np.where(leaf, 0, flat["right"] + shift).astype(np.int64)))
        head.value.copy_(torch.as_tensor(flat["value"].astype(np.float64)))
        head.is_leaf.copy_(torch.as_tensor(leaf))
        head.roots.copy_(torch.as_tensor(offsets.astype(np.int64)))
        head.baseline.copy_(torch.as_tensor(float(np.ravel(estimator._baseline_prediction)[0])))
        return head

    @classmethod
    def from_state(
        cls, state: dict[str, torch.Tensor], prefix: str, depth: int
    ) -> TreeEnsembleHead:
        return cls(
            int(state[prefix + "feature"].numel()), int(state[prefix + "roots"].numel()), depth
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._walk_numpy(x) if x.device.type == "cpu" else self._walk_torch(x)

    def _walk_torch(self, x: torch.Tensor) -> torch.Tensor:
        """All trees, one level per step, for the whole batch (on any device)."""
        x = x.double()
        node = self.roots.expand(x.shape[0], -1)
        for _ in range(self.depth):
            values = torch.gather(x, 1, self.feature[node])
            step = torch.where(values <= self.threshold[node], self.left[node], self.right[node])
            node = torch.where(self.is_leaf[node], node, step)
        return (self.value[node].sum(dim=1) + self.baseline).float()

    def _walk_numpy(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`_walk_torch` on CPU, the same walk and numbers with NumPy's ``take``
        (4x faster than torch's indexing: the trees were a third of a 16 px spectral
        tile's screening time). Leaves are their own children, so a tile that reached
        one stays there."""
        data = x.detach().double().contiguous().numpy()
        own = np.arange(self.feature.numel())
        leaf = self.is_leaf.numpy()
        left = np.where(leaf, own, self.left.numpy())
        right = np.where(leaf, own, self.right.numpy())
        children = np.stack([left, right], axis=1).reshape(-1)  # node's left at 2 * node
        feature, threshold = self.feature.numpy(), self.threshold.numpy()
        node = np.repeat(self.roots.numpy()[None], data.shape[0], axis=0)
        row_start = (np.arange(data.shape[0]) * data.shape[1])[:, None]
        flat = data.reshape(-1)
        for _ in range(self.depth):
            values = np.take(flat, row_start + np.take(feature, node))
            goes_left = np.less_equal(values, np.take(threshold, node))  # NaN goes right
            node = np.take(children, 2 * node + 1 - goes_left)
        raw = np.take(self.value.numpy(), node).sum(axis=1) + float(self.baseline)
        return torch.from_numpy(raw.astype(np.float32))


class PlattCalibrator(nn.Module):
    """``sigmoid(a * raw + b)``: raw scores to probabilities that match observed rates."""

    a: torch.Tensor
    b: torch.Tensor

    def __init__(self, a: float = 1.0, b: float = 0.0) -> None:
        super().__init__()
        _buffer(self, "a", a, torch.float32)
        _buffer(self, "b", b, torch.float32)

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.a * raw.float() + self.b)


def fit_platt(raw: np.ndarray, truth: np.ndarray) -> PlattCalibrator:
    """Platt scaling fitted on out-of-fold raw scores (a one-feature logistic regression).

    A positive slope is enforced: a negative one would mean the scores rank the wrong
    way round, and is replaced by the flat positive rate's calibration (slope 0).
    """
    from sklearn.linear_model import LogisticRegression

    fit = LogisticRegression(C=1e4, max_iter=1000).fit(raw.reshape(-1, 1), truth.astype(int))
    a = float(fit.coef_[0, 0])
    if a <= 0:
        rate = float(np.clip(truth.mean(), 1e-6, 1 - 1e-6))
        return PlattCalibrator(0.0, float(np.log(rate / (1 - rate))))
    return PlattCalibrator(a, float(fit.intercept_[0]))

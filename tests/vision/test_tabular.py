"""Tree heads: the NumPy walk (CPU) scores as the torch walk and scikit-learn do."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingClassifier

from geoscreen.vision.learners import GBM_PARAMS
from geoscreen.vision.tabular import TreeEnsembleHead


def test_numpy_and_torch_tree_walks_agree_with_scikit_learn() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, 30)).astype(np.float32)
    y = (x[:, 0] - x[:, 5] ** 2 + rng.normal(scale=0.7, size=600) > 0).astype(int)
    model = HistGradientBoostingClassifier(**GBM_PARAMS, random_state=0).fit(x, y)
    head = TreeEnsembleHead.from_sklearn(model)
    assert head.depth >= 4 and head.roots.numel() == GBM_PARAMS["max_iter"]
    test = torch.from_numpy(rng.normal(size=(500, 30)).astype(np.float32))
    test[:5] = torch.from_numpy(x[:5])  # training rows: values on the bins' edges
    ours = head(test)
    assert ours.dtype == torch.float32 and ours.shape == (500,)
    np.testing.assert_array_equal(ours.numpy(), head._walk_torch(test).numpy())
    np.testing.assert_allclose(ours.numpy(), model.decision_function(test.numpy()), atol=1e-5)
    # NaN goes right in both walks (the features never hold NaN; the walks still agree).
    test[7, :] = float("nan")
    np.testing.assert_array_equal(head(test).numpy(), head._walk_torch(test).numpy())

"""The moving average of a model's weights: what it holds, and that it is restored."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from geoscreen.vision.weight_average import WeightAverage


def _fill(model: nn.Module, value: float) -> nn.Module:
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)
    return model


def _model(value: float) -> nn.Module:
    return _fill(nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2)), value)


def test_average_follows_the_weights_with_an_early_correction() -> None:
    model = _model(0.0)
    average = WeightAverage(model, decay=0.9)
    _fill(model, 11.0)
    average.update(model)  # first update keeps 2/11 of the old average, not 0.9
    assert torch.allclose(average.average["0.weight"], torch.full((2, 3), 9.0))
    for _ in range(200):
        average.update(model)
    assert torch.allclose(average.average["0.weight"], torch.full((2, 3), 11.0), atol=1e-5)
    # Integer buffers (the batch-norm step counter) are not averaged.
    assert "1.num_batches_tracked" not in average.average


def test_late_updates_keep_the_decay_share() -> None:
    model = _model(1.0)
    average = WeightAverage(model, decay=0.5)
    average.updates = 1_000  # past the early correction
    _fill(model, 3.0)
    average.update(model)
    assert torch.allclose(average.average["0.bias"], torch.full((2,), 2.0))


def test_applied_swaps_the_average_in_and_back() -> None:
    model = _model(1.0)
    average = WeightAverage(model, decay=0.5)
    _fill(model, 5.0)
    with average.applied(model) as inside:
        assert torch.equal(inside[0].weight, torch.ones(2, 3))
    assert torch.equal(model[0].weight, torch.full((2, 3), 5.0))
    average.copy_to(model)
    assert torch.equal(model[0].weight, torch.ones(2, 3))


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.1])
def test_decay_outside_the_open_interval_is_refused(decay: float) -> None:
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(_model(0.0), decay)

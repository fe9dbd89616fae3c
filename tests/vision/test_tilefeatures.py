"""Spectral-context features: the fast quantiles and spreads are torch's, number for number."""

from __future__ import annotations

import pytest
import torch

from geoscreen.vision.tilefeatures import PERCENTILES, _std, quantiles


@pytest.mark.parametrize("shape", [(64, 13, 256), (5, 3, 1), (9, 2, 49), (3, 6, 4096)])
def test_quantiles_equal_torch_quantile(shape: tuple[int, ...]) -> None:
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    x[0, 0, : shape[-1] // 2] = 0.0  # ties, as padded and nodata pixels give
    q = torch.tensor(PERCENTILES)
    assert torch.equal(quantiles(x, q), torch.quantile(x, q, dim=-1))
    assert torch.equal(quantiles(x, q[1:2]), torch.quantile(x, q[1:2], dim=-1))


def test_quantiles_of_a_row_holding_nan_are_nan_as_in_torch() -> None:
    x = torch.rand(4, 3, 10)
    x[1, 2, 4] = float("nan")
    q = torch.tensor(PERCENTILES)
    got, expected = quantiles(x, q), torch.quantile(x, q, dim=-1)
    assert torch.equal(torch.isnan(got), torch.isnan(expected))
    assert torch.isnan(got[:, 1, 2]).all() and not torch.isnan(got[:, 0]).any()
    assert torch.equal(got.nan_to_num(), expected.nan_to_num())


@pytest.mark.parametrize("side", [1, 3, 7, 14, 16, 64])
def test_std_equals_torch_std(side: int) -> None:
    """The two-pass double std gives torch's one-pass numbers, on windows (views) of
    channels_last batches as the features take them."""
    gen = torch.Generator().manual_seed(side)
    x = torch.rand(256, 6, 64, 64, generator=gen) * torch.rand(256, 6, 1, 1, generator=gen) * 3
    x = x.contiguous(memory_format=torch.channels_last)
    top = (64 - side) // 2
    window = x[..., top : top + side, top : top + side]
    assert torch.equal(_std(window), window.flatten(2).std(dim=2, correction=0))

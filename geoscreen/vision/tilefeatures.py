"""Spectral-context features: per-band statistics of a tile at several scales.

What a small labelled set can teach is mostly spectral (what the ground reflects at
the labelled place) and a little textural (how it varies around it). A CNN pretrained
on ImageNet photographs sees neither NIR nor SWIR, and a 16 px Landsat tile is far
below its receptive field; a gradient-boosted tree on these statistics learns from a
few hundred labels what an analyst would compute by hand.

For every channel the model sees (bands, then indices), :class:`SpectralContext`
computes, on a batch of preprocessed tiles:

- mean and standard deviation in square windows centred on the tile (1, 3 and 7 px,
  half the tile) and over the whole tile;
- the 10th, 50th and 90th percentiles over the tile;
- mean and standard deviation of the gradient magnitude (central differences, a
  simple texture measure) over the tile and over its central half;
- with ``relative``, the mean of each channel relative to the pixel's brightness
  (:func:`relative_channels`) in the same windows.

Every statistic is computed for the whole batch with tensor operations (no per-tile
Python), and screening reads such tiles many at a time
(:mod:`geoscreen.vision.blockscreen`); at 16 px the spreads, means and tree walk are
then most of the time, at 256 px sorting for the percentiles. The windows are
centred, so the features barely change under the flips and rotations of a tile.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

PERCENTILES = (0.1, 0.5, 0.9)


def context_windows(tile_size: int) -> tuple[int, ...]:
    """Centred window sides (px): 1, 3 and 7 (the label's pixel and its neighbourhood),
    half the tile, then the whole tile (only those smaller than the tile, each distinct)."""
    sides = {1, 3, 7} | ({tile_size // 2} if tile_size // 2 > 10 else set())
    return (*sorted(s for s in sides if s < tile_size), tile_size)


def feature_names(channels: Sequence[str], tile_size: int, relative: bool = False) -> list[str]:
    """Names of the features, in the order :class:`SpectralContext` returns them."""
    names: list[str] = []
    for side in context_windows(tile_size):
        where = "tile" if side == tile_size else f"w{side}"
        names += [f"{c}:mean_{where}" for c in channels]
        names += [f"{c}:std_{where}" for c in channels]
    names += [f"{c}:p{round(q * 100)}" for q in PERCENTILES for c in channels]
    for where in ("tile", "centre"):
        names += [f"{c}:grad_mean_{where}" for c in channels]
        names += [f"{c}:grad_std_{where}" for c in channels]
    if relative:
        for side in context_windows(tile_size):
            where = "tile" if side == tile_size else f"w{side}"
            names += [f"{c}/brightness:mean_{where}" for c in channels]
    return names


def n_features(channels: int, tile_size: int, relative: bool = False) -> int:
    """How many features a tile of ``channels`` x ``tile_size``² gives."""
    windows = len(context_windows(tile_size))
    return channels * (2 * windows + len(PERCENTILES) + 4 + (windows if relative else 0))


def relative_channels(x: torch.Tensor) -> torch.Tensor:
    """Each channel divided by the pixel's mean over channels (its brightness).

    Band ratios change little with illumination, haze or exposure, which differ from
    scene to scene far more than the materials do: features of these transfer better
    to imagery the model was not trained on (NEON OSBS -> YELL tile AP 0.59 -> 0.68
    for the spectral logistic regression in ``benchmarks/quality.py``'s exploration).
    """
    return x / (x.mean(dim=1, keepdim=True).clamp_min(0.0) + RELATIVE_EPS)


RELATIVE_EPS = 0.01


class SpectralContext(nn.Module):
    """``(B, C, T, T)`` preprocessed tiles -> ``(B, F)`` float32 features (see module doc).

    With ``relative`` (several channels scaled to [0, 1]), the statistics are computed
    for the :func:`relative_channels` too, after those of the channels themselves.
    """

    quantiles: torch.Tensor

    def __init__(self, channels: int, tile_size: int, relative: bool = False) -> None:
        super().__init__()
        self.channels, self.tile_size, self.relative = channels, tile_size, relative
        self.windows = context_windows(tile_size)
        self.register_buffer("quantiles", torch.tensor(PERCENTILES), persistent=False)

    @property
    def out_features(self) -> int:
        return n_features(self.channels, self.tile_size, self.relative)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        b, c, h, w = x.shape
        if (c, h, w) != (self.channels, self.tile_size, self.tile_size):
            raise ValueError(
                f"expected tiles of {self.channels} x {self.tile_size}², got {c} x {h} x {w}"
            )
        parts: list[torch.Tensor] = []
        for side in self.windows:
            window = _centre(x, side)
            parts += [window.mean(dim=(2, 3)), _std(window)]
        flat = x.reshape(b, c, h * w)
        parts.append(quantiles(flat, self.quantiles).permute(1, 0, 2).reshape(b, -1))
        grad = _gradient_magnitude(x)
        for region in (grad, _centre(grad, _half(grad.shape[-1]))):
            parts += [region.mean(dim=(2, 3)), _std(region)]
        if self.relative:
            ratios = relative_channels(x)
            parts += [_centre(ratios, side).mean(dim=(2, 3)) for side in self.windows]
        return torch.cat(parts, dim=1)


def quantiles(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``torch.quantile(x, q, dim=-1)`` (linear interpolation), the same numbers faster.

    On CPU the rows are sorted by NumPy (a vectorised sort, 20x faster than torch's on
    rows of a few hundred values; the quantiles were most of the features' time), then
    interpolated exactly as torch does: rank ``q * (n - 1)`` in double, ``lerp``
    between the values below and above it with weight ``rank - floor(rank)``. A row holding NaN
    gives NaN, as in torch.
    """
    if x.device.type != "cpu" or x.dtype != torch.float32 or x.shape[-1] == 0:
        return torch.quantile(x, q, dim=-1)
    n = x.shape[-1]
    ordered = torch.from_numpy(np.sort(x.detach().contiguous().numpy(), axis=-1))
    ranks = q.to(torch.float64) * (n - 1)  # torch computes ranks in double
    below = ranks.floor()
    low = ordered[..., below.to(torch.int64)].movedim(-1, 0)
    high = ordered[..., ranks.ceil().to(torch.int64)].movedim(-1, 0)
    weights = (ranks - below).to(torch.float32).reshape(-1, *([1] * (x.dim() - 1)))
    out = torch.lerp(low, high, weights.expand_as(low))
    nan = torch.isnan(ordered[..., -1])  # NumPy sorts NaN last
    return out.masked_fill(nan, float("nan")) if bool(nan.any()) else out


def _centre(x: torch.Tensor, side: int) -> torch.Tensor:
    """The ``side`` x ``side`` window at the centre of the last two dimensions."""
    h, w = x.shape[-2:]
    top, left = (h - side) // 2, (w - side) // 2
    return x[..., top : top + side, left : left + side]


def _half(side: int) -> int:
    """About half of ``side``, of the same parity, so the window sits exactly centred."""
    half = max(1, side // 2)
    return half + 1 if (side - half) % 2 and half < side else half


def _std(x: torch.Tensor) -> torch.Tensor:
    """Population standard deviation over the last two dimensions (0 for one pixel).

    Two passes in double: the numbers of ``x.flatten(2).std(dim=2, correction=0)``
    (which accumulates float32 in double too; equal on every tested batch), 1.2-1.9x
    faster than its one-pass kernel, which was half of the features' time.
    """
    deviation = x.flatten(2).double()
    deviation = deviation - deviation.mean(dim=2, keepdim=True)
    return deviation.square_().mean(dim=2).sqrt_().to(x.dtype)


def _gradient_magnitude(x: torch.Tensor) -> torch.Tensor:
    """Central-difference gradient magnitude over the interior, ``(B, C, T-2, T-2)``.

    Central differences keep the measure unchanged under flips and quarter turns of
    the tile (zeros for tiles under 3 px).
    """
    if x.shape[-1] < 3 or x.shape[-2] < 3:
        return torch.zeros_like(x)
    dx = x[..., 1:-1, 2:] - x[..., 1:-1, :-2]
    dy = x[..., 2:, 1:-1] - x[..., :-2, 1:-1]
    return torch.sqrt(dx * dx + dy * dy)

"""An exponential moving average of a model's weights, for training on few labels.

On a few hundred boxes each step's gradient is noisy, and the weights at the last step
are one draw from where training wanders; their moving average sits nearer the middle
of that region. Detector training validates and keeps the average when the option is
on (``DetectTrainOptions.weight_average``, off by default); the raw weights keep
training. Measured on the NEON crowns (docs/detector.md, session 16) it changes nothing beyond
the seeds' spread: the cosine schedule already ends where the weights barely move.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class WeightAverage:
    """The moving average of ``model``'s floating-point weights and buffers.

    ``decay`` is the share of the average kept at each :meth:`update`; early on it is
    lowered to ``(1 + t) / (10 + t)`` after ``t`` updates, so that the first weights
    (a random head) do not linger in the average.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must lie between 0 and 1, not {decay}")
        self.decay = decay
        self.updates = 0
        self.average = {
            name: value.detach().clone()
            for name, value in model.state_dict().items()
            if value.is_floating_point()
        }

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average toward ``model``'s current weights."""
        self.updates += 1
        keep = min(self.decay, (1 + self.updates) / (10 + self.updates))
        current = model.state_dict()
        for name, average in self.average.items():
            average.lerp_(current[name].detach(), 1.0 - keep)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Put the average in place of ``model``'s weights (for good)."""
        model.load_state_dict(self.average, strict=False)

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """``model`` with the averaged weights inside the block, its own weights after."""
        saved = {name: value.detach().clone() for name, value in model.state_dict().items()
                 if name in self.average}  # fmt: skip
        self.copy_to(model)
        try:
            yield model
        finally:
            model.load_state_dict(saved, strict=False)

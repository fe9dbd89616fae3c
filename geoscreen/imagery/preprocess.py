"""Preprocessing: band selection, derived indices and normalisation of raw tiles.

Configs (pydantic, ``extra="forbid"``) describe what to do; they build runtime
objects bound to one scene (band indexes resolved, statistics estimated).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

IndexName = Literal["ndvi", "ndwi", "ndbi"]


class NormalizationConfig(BaseModel):
    """How raw values become model inputs.

    - ``percentile``: per band, stretch [p_low, p_high] to [0, 1]; statistics come
      from overviews or a decimated read, never a full read.
    - ``meanstd``: fixed per-band ``mean``/``std`` (in raw units, or after
      ``scale`` if given), as a trained model expects.
    - ``dtype_range``: divide by the dtype's maximum (uint8 -> /255, uint16 -> /65535).
    """

    model_config = ConfigDict(extra="forbid")

    method: Literal["percentile", "meanstd", "dtype_range"] = "percentile"
    percentiles: tuple[float, float] = (2.0, 98.0)
    mean: list[float] | None = None
    std: list[float] | None = None
    clip: bool = True


class PreprocessConfig(BaseModel):
    """Bands in, derived indices added, normalisation applied."""

    model_config = ConfigDict(extra="forbid")

    bands: list[str] | None = Field(
        default=None, description="Band names (or sensor common names) in model order; all if unset."
    )
    indices: list[IndexName] = Field(default_factory=list)
    normalization: NormalizationConfig = Field(default_factory=NormalizationConfig)

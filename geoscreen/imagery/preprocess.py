"""Preprocessing: band selection, derived indices and normalisation of raw tiles.

Configs (pydantic, ``extra="forbid"``) describe what to do; they build runtime
objects bound to one scene (band indexes resolved, statistics estimated) with
:meth:`ScenePreprocessor.build`. The runtime object is a small picklable value,
so DataLoader workers get it for free; statistics are estimated once, at build.

Output channels are the selected bands in config order, then the indices.
Every channel is normalised by one affine map ``(value - offset) * scale``:

- bands: from raw values, per the normalisation method;
- indices (NDVI, NDWI, NDBI, each a normalised difference in [-1, 1]): mapped
  to [0, 1] by ``(v + 1) / 2`` for ``percentile`` and ``dtype_range``; standardised
  with their own ``mean``/``std`` entries for ``meanstd``.

Invalid pixels (nodata, masked, NaN) are 0 in every output channel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from rasterio.windows import Window

from geoscreen.errors import ConfigError, InputError
from geoscreen.imagery.masks import read_valid_mask, valid_from_data
from geoscreen.imagery.scene import Scene

IndexName = Literal["ndvi", "ndwi", "ndbi"]

# Normalised differences (a - b) / (a + b), by band common name.
INDEX_BANDS: dict[str, tuple[str, str]] = {
    "ndvi": ("nir", "red"),
    "ndwi": ("green", "nir"),
    "ndbi": ("swir16", "nir"),
}

# Above this many pixels, a scene without overviews is sampled window by window
# instead of by a decimated read (which would decode every block at full resolution).
_DECIMATE_LIMIT_FACTOR = 16
_SAMPLE_GRID = 16  # windows per axis


class NormalizationConfig(BaseModel):
    """How raw values become model inputs.

    - ``percentile``: per band, stretch [p_low, p_high] to [0, 1]; statistics come
      from overviews, a decimated read or sampled windows, never a full read.
    - ``meanstd``: fixed ``mean``/``std``, one per output channel (bands, then
      indices), in raw units, or after multiplying raw bands by ``scale`` if given,
      as a trained model expects. Never clipped.
    - ``dtype_range``: divide by the dtype's maximum (uint8 -> /255, uint16 -> /65535;
      float data is taken as already in [0, 1]).

    ``clip`` clamps ``percentile`` and ``dtype_range`` outputs to [0, 1].
    """

    model_config = ConfigDict(extra="forbid")

    method: Literal["percentile", "meanstd", "dtype_range"] = "percentile"
    percentiles: tuple[float, float] = (2.0, 98.0)
    mean: list[float] | None = None
    std: list[float] | None = None
    scale: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="meanstd only: raw bands are multiplied by this first.",
    )
    clip: bool = True

    @model_validator(mode="after")
    def _sane(self) -> NormalizationConfig:
        low, high = self.percentiles
        if not 0 <= low < high <= 100:
            raise ValueError(
                f"percentiles must satisfy 0 <= low < high <= 100, got {list(self.percentiles)}"
                " (e.g. [2, 98])"
            )
        values = [*(self.mean or []), *(self.std or [])]
        if not all(math.isfinite(v) for v in values):
            raise ValueError("mean and std must be finite numbers")
        if self.std is not None and not all(v > 0 for v in self.std):
            raise ValueError(f"std values must all be positive, got {self.std}")
        if self.mean is not None and self.std is not None and len(self.mean) != len(self.std):
            raise ValueError(
                f"mean has {len(self.mean)} values but std has {len(self.std)} (one per channel)"
            )
        return self


class PreprocessConfig(BaseModel):
    """Bands in, derived indices added, normalisation applied."""

    model_config = ConfigDict(extra="forbid")

    bands: list[str] | None = Field(
        default=None,
        description="Band names (or sensor common names) in model order; all if unset.",
    )
    indices: list[IndexName] = Field(default_factory=list)
    normalization: NormalizationConfig = Field(default_factory=NormalizationConfig)


@dataclass(frozen=True, eq=False)
class ScenePreprocessor:
    """A :class:`PreprocessConfig` bound to one scene; turns raw tiles into model inputs.

    ``read_indexes`` are the 1-based bands to read (selected bands, then any extra
    ones the indices need). :meth:`apply` takes those bands, in that order.
    """

    scene_id: str
    read_indexes: tuple[int, ...]
    channel_names: tuple[str, ...]
    band_positions: tuple[int, ...]
    index_positions: tuple[tuple[int, int], ...]
    offset: np.ndarray
    scale: np.ndarray
    clip: bool

    @classmethod
    def build(cls, config: PreprocessConfig, scene: Scene) -> ScenePreprocessor:
        """Resolve bands, check indices can be computed and estimate statistics."""
        band_idx = scene.band_indexes(config.bands)
        read = list(dict.fromkeys(band_idx))
        index_pairs: list[tuple[int, int]] = []
        for name in config.indices:
            pair = tuple(_index_band(scene, name, role) for role in INDEX_BANDS[name])
            for idx in pair:
                if idx not in read:
                    read.append(idx)
            index_pairs.append((read.index(pair[0]), read.index(pair[1])))
        names = tuple(scene.band_names[i - 1] for i in band_idx) + tuple(config.indices)
        offset, scale = _affine(config.normalization, scene, band_idx, len(config.indices), names)
        return cls(
            scene_id=scene.id,
            read_indexes=tuple(read),
            channel_names=names,
            band_positions=tuple(read.index(i) for i in band_idx),
            index_positions=tuple(index_pairs),
            offset=offset,
            scale=scale,
            clip=_needs_clip(config.normalization, [scene.dtypes[i - 1] for i in band_idx]),
        )

    @property
    def out_channels(self) -> int:
        """Number of output channels (bands, then indices)."""
        return len(self.channel_names)

    def apply(
        self, raw: np.ndarray, valid: np.ndarray, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Raw bands (C x H x W, ``read_indexes`` order) -> float32 (out_channels x H x W).

        ``valid`` (H x W, bool) marks pixels holding data; all others become 0.
        ``out``, if given, is a float32 (out_channels x H x W) array (or view) to
        write into, e.g. a slot of a preallocated batch.
        """
        if raw.ndim != 3 or raw.shape[0] != len(self.read_indexes):
            raise ValueError(
                f"expected ({len(self.read_indexes)}, H, W) raw bands, got shape {raw.shape}"
            )
        shape = (self.out_channels, *raw.shape[1:])
        if out is None:
            out = np.empty(shape, dtype=np.float32)
        elif out.shape != shape or out.dtype != np.float32:
            raise ValueError(f"out must be float32 of shape {shape}, got {out.dtype} {out.shape}")
        n_bands = len(self.band_positions)
        bands = out[:n_bands]
        # Cast and scale in one pass: into a pixel-interleaved (channels_last) ``out``
        # 4x faster than a cast followed by an in-place scale.
        picked = self.band_positions
        src = raw if picked == tuple(range(raw.shape[0])) else raw[list(picked)]
        np.multiply(src, self.scale[:n_bands, None, None], out=bands, casting="unsafe")
        if self._band_shift is not None:  # (v - offset) * scale == v * scale - offset * scale
            bands -= self._band_shift
        for k, (a, b) in enumerate(self.index_positions, start=n_bands):
            _normalized_difference(raw[a], raw[b], out=out[k])
            out[k] -= self.offset[k]
            out[k] *= self.scale[k]
        if self.clip:
            np.clip(out, 0.0, 1.0, out=out)
        if not valid.all():
            np.copyto(out, 0.0, where=~valid[None])
        return out

    @cached_property
    def _band_shift(self) -> np.ndarray | None:
        n_bands = len(self.band_positions)
        shift = (self.offset[:n_bands] * self.scale[:n_bands])[:, None, None]
        return shift if np.any(shift) else None


def _needs_clip(norm: NormalizationConfig, dtypes: list[str]) -> bool:
    """Whether outputs can leave [0, 1] and the config asks to clamp them."""
    if not norm.clip or norm.method == "meanstd":
        return False
    # Unsigned integers divided by their dtype maximum stay in [0, 1]; so do indices.
    return norm.method == "percentile" or any(np.dtype(d).kind != "u" for d in dtypes)


def _normalized_difference(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """(a - b) / (a + b) into ``out`` (float32), 0 where a + b == 0, clamped to [-1, 1]."""
    num = np.subtract(a, b, dtype=np.float32, casting="unsafe")
    den = np.add(a, b, dtype=np.float32, casting="unsafe")
    out.fill(0.0)
    np.divide(num, den, out=out, where=den != 0)
    np.clip(out, -1.0, 1.0, out=out)


def _index_band(scene: Scene, index: str, common: str) -> int:
    try:
        return scene.band_index(common)
    except ConfigError:
        a, b = INDEX_BANDS[index]
        raise ConfigError(
            f"index {index} needs a {common!r} band, which this scene lacks "
            f"({index} = ({a} - {b}) / ({a} + {b}))",
            where=scene.uri,
            fix=f"Drop {index} from the profile's indices, or set the sensor preset that names "
            f"the scene's bands (bands: {', '.join(scene.band_names)}).",
        ) from None


def _affine(
    norm: NormalizationConfig,
    scene: Scene,
    band_idx: list[int],
    n_indices: int,
    names: tuple[str, ...],
) -> tuple[np.ndarray, np.ndarray]:
    """Per output channel (offset, scale) so that output = (raw - offset) * scale."""
    n_bands = len(band_idx)
    offset = np.zeros(n_bands + n_indices, dtype=np.float64)
    scale = np.ones(n_bands + n_indices, dtype=np.float64)
    offset[n_bands:], scale[n_bands:] = -1.0, 0.5  # [-1, 1] -> [0, 1]
    if norm.method == "dtype_range":
        scale[:n_bands] = [1.0 / _dtype_max(scene.dtypes[i - 1]) for i in band_idx]
    elif norm.method == "percentile":
        low, high = norm.percentiles
        if not 0 <= low < high <= 100:
            raise ConfigError(
                f"percentiles must satisfy 0 <= low < high <= 100, got {norm.percentiles}",
                fix="Use e.g. percentiles: [2, 98].",
            )
        unique = list(dict.fromkeys(band_idx))
        stats = estimate_percentiles(scene, unique, (low, high))
        for k, idx in enumerate(band_idx):
            lo, hi = stats[unique.index(idx)]
            offset[k] = lo
            scale[k] = 1.0 / (hi - lo) if hi > lo else 1.0
    else:
        offset, scale = _meanstd(norm, n_bands, names)
    return offset.astype(np.float32), scale.astype(np.float32)


def _meanstd(
    norm: NormalizationConfig, n_bands: int, names: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray]:
    wanted = len(names)
    fix = f"Give one value per output channel, in this order: {', '.join(names)}."
    if norm.mean is None or norm.std is None:
        raise ConfigError("normalization method meanstd needs both mean and std", fix=fix)
    if len(norm.mean) != wanted or len(norm.std) != wanted:
        raise ConfigError(
            f"meanstd has {len(norm.mean)} mean and {len(norm.std)} std values "
            f"for {wanted} output channels",
            fix=fix,
        )
    mean = np.asarray(norm.mean, dtype=np.float64)
    std = np.asarray(norm.std, dtype=np.float64)
    if not np.all(std > 0):
        raise ConfigError("meanstd std values must all be positive", fix=fix)
    raw_scale = np.ones(wanted)
    raw_scale[:n_bands] = norm.scale or 1.0
    # (raw * s - mean) / std == (raw - mean / s) * (s / std)
    return mean / raw_scale, raw_scale / std


def _dtype_max(dtype: str) -> float:
    kind = np.dtype(dtype)
    return float(np.iinfo(kind).max) if kind.kind in "ui" else 1.0


# -- statistics --------------------------------------------------------------------------
def estimate_percentiles(
    scene: Scene,
    indexes: Sequence[int],
    percentiles: Sequence[float],
    max_pixels: int = 1_000_000,
) -> np.ndarray:
    """Per-band percentiles (len(indexes) x len(percentiles)) over valid pixels.

    Reads at most about ``max_pixels`` pixels per band: the whole scene when it is
    that small; a decimated read (GDAL uses overviews when the file has them);
    or, for a large file without overviews, a regular grid of small windows.
    A reprojected scene is sampled on its source grid (same values, no warping).
    """
    values = sample_valid_pixels(scene, list(indexes), max_pixels)
    if values.shape[1] == 0:
        raise InputError(
            "the scene has no valid pixels to estimate statistics from",
            where=scene.uri,
            fix="Check its nodata value and mask, or use normalization method dtype_range "
            "or meanstd.",
        )
    return np.percentile(values, list(percentiles), axis=1).T.astype(np.float64)


def sample_valid_pixels(scene: Scene, indexes: list[int], max_pixels: int) -> np.ndarray:
    """Values (len(indexes) x N) of up to about ``max_pixels`` valid pixels, spread evenly."""
    source = _unwarped(scene)
    width, height = source.width, source.height
    with source.open() as src:
        if width * height <= max_pixels or (
            source.overview_count == 0 and width * height > _DECIMATE_LIMIT_FACTOR * max_pixels
        ):
            windows = _sample_windows(width, height, max_pixels)
            parts = []
            for window in windows:
                data = src.read(indexes, window=window)
                valid = read_valid_mask(src, source, window, indexes, data=data)
                parts.append(data[:, valid])
            return np.concatenate(parts, axis=1)
        factor = math.sqrt(width * height / max_pixels)
        shape = (len(indexes), max(1, round(height / factor)), max(1, round(width / factor)))
        data = src.read(indexes, out_shape=shape)
        if source.mask_kind == "mask":
            valid = (src.read_masks(indexes, out_shape=shape) > 0).all(axis=0)
            valid &= valid_from_data(data, None)
        else:
            valid = valid_from_data(data, source.nodata if source.mask_kind == "nodata" else None)
        return data[:, valid]


def _unwarped(scene: Scene) -> Scene:
    """The scene on its source grid (itself when not reprojected)."""
    if scene.warp is None or scene.source_transform is None or scene.source_size is None:
        return scene
    width, height = scene.source_size
    return replace(
        scene,
        warp=None,
        crs=scene.source_crs,
        transform=scene.source_transform,
        width=width,
        height=height,
        source_transform=None,
        source_size=None,
        source_crs=None,
        # read_masks covers internal masks, alpha and all-valid sources alike.
        mask_kind="nodata" if scene.nodata is not None else "mask",
    )


def _sample_windows(width: int, height: int, max_pixels: int) -> list[Window]:
    """The whole grid if small, else an evenly spread grid of small windows."""
    if width * height <= max_pixels:
        return [Window(0, 0, width, height)]
    per_axis = _SAMPLE_GRID
    size = min(max(math.isqrt(max_pixels // per_axis**2), 8), width, height)
    cols = np.linspace(0, max(0, width - size), per_axis).round().astype(int)
    rows = np.linspace(0, max(0, height - size), per_axis).round().astype(int)
    return [Window(int(c), int(r), size, size) for r in rows for c in cols]

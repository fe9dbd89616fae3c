"""Sensor band presets: which band of a file is which.

A preset names the bands of a sensor's product in file order and maps each to a
common name (``red``, ``nir``, ``swir16`` ...) that derived indices and profiles
use. Presets are detected from what a file says about itself (band
descriptions, product tags) and can always be set by the user.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from geoscreen.errors import ConfigError


@dataclass(frozen=True)
class SensorPreset:
    """Band layout of one sensor product."""

    name: str
    description: str
    bands: tuple[str, ...]
    common_names: Mapping[str, str] = field(default_factory=dict)
    nominal_resolution_m: float | None = None
    reflectance_scale: float | None = None
    variants: tuple[tuple[str, ...], ...] = ()

    def layouts(self) -> tuple[tuple[str, ...], ...]:
        """Every band layout this product comes in, the main one first."""
        return (self.bands, *self.variants)

    def layout_for(self, count: int) -> tuple[str, ...] | None:
        """The band names for a file with ``count`` bands, or None if none fits."""
        for layout in self.layouts():
            if len(layout) == count:
                return layout
        return None


_S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09",
             "B10", "B11", "B12")  # fmt: skip
_S2_COMMON = {
    "B01": "coastal", "B02": "blue", "B03": "green", "B04": "red", "B05": "rededge1",
    "B06": "rededge2", "B07": "rededge3", "B08": "nir", "B8A": "nir08", "B09": "nir09",
    "B10": "cirrus", "B11": "swir16", "B12": "swir22",
}  # fmt: skip
_LANDSAT_COMMON = {
    "SR_B1": "coastal", "SR_B2": "blue", "SR_B3": "green", "SR_B4": "red",
    "SR_B5": "nir", "SR_B6": "swir16", "SR_B7": "swir22",
}  # fmt: skip

PRESETS: dict[str, SensorPreset] = {
    p.name: p
    for p in (
        SensorPreset(
            name="sentinel2_l2a",
            description="Sentinel-2 MSI Level-2A surface reflectance, uint16 (DN/10000), "
            "10/20/60 m",
            bands=_S2_BANDS,
            variants=(tuple(b for b in _S2_BANDS if b != "B10"),),
            common_names=_S2_COMMON,
            nominal_resolution_m=10.0,
            reflectance_scale=1e-4,
        ),
        SensorPreset(
            name="landsat89_l2",
            description="Landsat 8/9 OLI Collection 2 Level-2 surface reflectance, uint16, 30 m",
            bands=("SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7"),
            common_names=_LANDSAT_COMMON,
            nominal_resolution_m=30.0,
            reflectance_scale=2.75e-5,
        ),
        SensorPreset(
            name="planetscope_4b",
            description="PlanetScope 4-band analytic surface reflectance, uint16, 3 m",
            bands=("blue", "green", "red", "nir"),
            common_names={"blue": "blue", "green": "green", "red": "red", "nir": "nir"},
            nominal_resolution_m=3.0,
            reflectance_scale=1e-4,
        ),
        SensorPreset(
            name="naip_rgbn",
            description="NAIP / aerial 4-band red, green, blue, near-infrared, uint8, 0.3-1 m",
            bands=("red", "green", "blue", "nir"),
            common_names={"red": "red", "green": "green", "blue": "blue", "nir": "nir"},
            nominal_resolution_m=0.6,
        ),
        SensorPreset(
            name="rgb",
            description="Three-band true colour (aerial, drone orthomosaic, VHR satellite)",
            bands=("red", "green", "blue"),
            common_names={"red": "red", "green": "green", "blue": "blue"},
        ),
    )
}

# Tag values that name a product; matched case-insensitively against tag values.
_TAG_HINTS: tuple[tuple[str, str], ...] = (
    ("sentinel-2", "sentinel2_l2a"),
    ("sentinel2", "sentinel2_l2a"),
    ("s2msi2a", "sentinel2_l2a"),
    ("landsat_8", "landsat89_l2"),
    ("landsat_9", "landsat89_l2"),
    ("landsat 8", "landsat89_l2"),
    ("landsat 9", "landsat89_l2"),
    ("planetscope", "planetscope_4b"),
    ("naip", "naip_rgbn"),
)


def get_preset(name: str) -> SensorPreset:
    """The preset called ``name``; a clear error lists the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        known = ", ".join(sorted(PRESETS))
        raise ConfigError(f"unknown sensor preset {name!r}", fix=f"Use one of: {known}.") from None


def detect_preset(
    count: int,
    descriptions: Sequence[str | None],
    colorinterp: Sequence[str],
    tags: Mapping[str, str],
) -> SensorPreset | None:
    """Guess the preset from what the file says: band descriptions, then tags, then colours.

    Returns None when the file says nothing conclusive; nothing is guessed from
    band count alone.
    """
    names = [d.strip() for d in descriptions if d]
    if len(names) == count:
        for preset in PRESETS.values():
            layout = preset.layout_for(count)
            if layout and [n.upper() for n in names] == [b.upper() for b in layout]:
                return preset
    blob = " ".join(str(v) for v in tags.values()).lower()
    for hint, preset_name in _TAG_HINTS:
        preset = PRESETS[preset_name]
        if hint in blob and preset.layout_for(count):
            return preset
    colours = [c.lower() for c in colorinterp]
    if count == 3 and colours == ["red", "green", "blue"]:
        return PRESETS["rgb"]
    return None


def default_band_names(count: int, colorinterp: Sequence[str]) -> tuple[str, ...]:
    """Band names for a file without a preset: colour names where given, else ``band1``..."""
    names = []
    for i in range(count):
        colour = colorinterp[i].lower() if i < len(colorinterp) else ""
        names.append(colour if colour in ("red", "green", "blue", "alpha") else f"band{i + 1}")
    return tuple(names)

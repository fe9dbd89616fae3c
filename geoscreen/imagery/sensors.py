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
# Landsat 8/9 OLI/TIRS Level-1: digital numbers, band numbers as USGS names the files.
_OLI_L1_COMMON = {
    "B1": "coastal", "B2": "blue", "B3": "green", "B4": "red", "B5": "nir", "B6": "swir16",
    "B7": "swir22", "B8": "pan", "B9": "cirrus", "B10": "lwir11", "B11": "lwir12",
}  # fmt: skip
_OLI_L1 = ("B1", "B2", "B3", "B4", "B5", "B6", "B7")
# Landsat 4-5 TM and 7 ETM+: band 4 is near-infrared (on OLI it is red), band 6 thermal.
_TM_L1_COMMON = {
    "B1": "blue", "B2": "green", "B3": "red", "B4": "nir", "B5": "swir16", "B6": "lwir",
    "B7": "swir22",
}  # fmt: skip
_TM_L1 = ("B1", "B2", "B3", "B4", "B5", "B7")
_TM_L2_COMMON = {
    "SR_B1": "blue", "SR_B2": "green", "SR_B3": "red", "SR_B4": "nir", "SR_B5": "swir16",
    "SR_B7": "swir22",
}  # fmt: skip
_TM_L2 = ("SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B7")
_C2_L2_SCALE = 2.75e-5  # Collection 2 surface reflectance: DN * 2.75e-5 - 0.2


def _tm_presets(name: str, instrument: str) -> tuple[SensorPreset, SensorPreset]:
    """The Level-2 and Level-1 presets of a TM-family instrument (same bands, 30 m)."""
    level2 = SensorPreset(
        name=f"{name}_l2",
        description=f"{instrument} Collection 2 Level-2 surface reflectance, uint16, 30 m "
        "(bands 1-5 and 7)",
        bands=_TM_L2,
        common_names=_TM_L2_COMMON,
        nominal_resolution_m=30.0,
        reflectance_scale=_C2_L2_SCALE,
    )
    level1 = SensorPreset(
        name=f"{name}_l1",
        description=f"{instrument} Collection 2 Level-1 digital numbers, uint8, 30 m: "
        "bands 1-5 and 7 (variant: with thermal B6 in band order)",
        bands=_TM_L1,
        variants=(("B1", "B2", "B3", "B4", "B5", "B6", "B7"),),
        common_names=_TM_L1_COMMON,
        nominal_resolution_m=30.0,
    )
    return level2, level1


def _sentinel2(name: str, level: str) -> SensorPreset:
    """A Sentinel-2 MSI product level: 13 bands (12 without cirrus B10), DN/10000."""
    return SensorPreset(
        name=name,
        description=f"Sentinel-2 MSI {level}, uint16 (DN/10000), 10/20/60 m",
        bands=_S2_BANDS,
        variants=(tuple(b for b in _S2_BANDS if b != "B10"),),
        common_names=_S2_COMMON,
        nominal_resolution_m=10.0,
        reflectance_scale=1e-4,
    )


PRESETS: dict[str, SensorPreset] = {
    p.name: p
    for p in (
        _sentinel2("sentinel2_l2a", "Level-2A surface reflectance"),
        _sentinel2("sentinel2_l1c", "Level-1C top-of-atmosphere reflectance"),
        SensorPreset(
            name="landsat89_l2",
            description="Landsat 8/9 OLI Collection 2 Level-2 surface reflectance, uint16, 30 m",
            bands=("SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7"),
            common_names=_LANDSAT_COMMON,
            nominal_resolution_m=30.0,
            reflectance_scale=_C2_L2_SCALE,
        ),
        SensorPreset(
            name="landsat89_l1",
            description="Landsat 8/9 OLI/TIRS Collection 2 Level-1 digital numbers, uint16, "
            "30 m: bands 1-7 stacked (variants: with cirrus B9; with B9 and thermal B10, B11)",
            bands=_OLI_L1,
            variants=((*_OLI_L1, "B9"), (*_OLI_L1, "B9", "B10", "B11")),
            common_names=_OLI_L1_COMMON,
            nominal_resolution_m=30.0,
        ),
        *_tm_presets("landsat7_etm", "Landsat 7 ETM+"),
        *_tm_presets("landsat45_tm", "Landsat 4-5 TM"),
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

# Tag values that name a product, matched case-insensitively against tag values, and the
# presets they may mean (Level-2 first: without a level tag, surface reflectance is assumed).
_L89 = ("landsat89_l2", "landsat89_l1")
_L7 = ("landsat7_etm_l2", "landsat7_etm_l1")
_L45 = ("landsat45_tm_l2", "landsat45_tm_l1")
_TAG_HINTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # Level-1C (top of atmosphere) only when the file says so: its product type (S2MSI1C),
    # product id (S2A_MSIL1C_...) or processing level.
    ("s2msi1c", ("sentinel2_l1c",)),
    ("msil1c", ("sentinel2_l1c",)),
    ("level-1c", ("sentinel2_l1c",)),
    ("sentinel-2", ("sentinel2_l2a",)),
    ("sentinel2", ("sentinel2_l2a",)),
    ("s2msi2a", ("sentinel2_l2a",)),
    *((f"landsat{sep}{n}", _L89) for n in "89" for sep in "_ "),
    *((f"landsat{sep}7", _L7) for sep in "_ "),
    *((f"landsat{sep}{n}", _L45) for n in "45" for sep in "_ "),
    ("planetscope", ("planetscope_4b",)),
    ("naip", ("naip_rgbn",)),
)
# Landsat PROCESSING_LEVEL values (and product ids: LC09_L1TP_..., LT05_L2SP_...).
_LEVEL_HINTS = (("l1tp", "_l1"), ("l1gt", "_l1"), ("l1gs", "_l1"), ("l2sp", "_l2"),
                ("l2sr", "_l2"))  # fmt: skip


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
    band count alone. Band names shared by products whose bands mean different
    things (``B1``..``B7`` of Landsat 8/9 OLI and of Landsat 4-7 TM/ETM+, where
    ``B4`` is red or near-infrared) need a tag naming the mission.
    """
    names = [d.strip().upper() for d in descriptions if d]
    by_names: list[SensorPreset] = []
    if len(names) == count:
        for preset in PRESETS.values():
            layout = preset.layout_for(count)
            if layout and names == [b.upper() for b in layout]:
                by_names.append(preset)
    if by_names:
        tagged = _from_tags(count, tags, among=by_names)
        if tagged is not None:
            return tagged
        meanings = {_meaning(p, count) for p in by_names}
        return by_names[0] if len(meanings) == 1 else None
    tagged = _from_tags(count, tags)
    if tagged is not None:
        return tagged
    colours = [c.lower() for c in colorinterp]
    if count == 3 and colours == ["red", "green", "blue"]:
        return PRESETS["rgb"]
    return None


def _from_tags(
    count: int, tags: Mapping[str, str], among: Sequence[SensorPreset] | None = None
) -> SensorPreset | None:
    """The preset the file's tags name (mission, and processing level for Landsat),
    only from ``among`` when given (the presets the band names fit)."""
    blob = " ".join(str(v) for v in tags.values()).lower()
    level = next((suffix for hint, suffix in _LEVEL_HINTS if hint in blob), None)
    for hint, preset_names in _TAG_HINTS:
        if hint not in blob:
            continue
        for name in preset_names:
            if level is not None and name.startswith("landsat") and not name.endswith(level):
                continue
            if among is not None and PRESETS[name] not in among:
                continue
            if PRESETS[name].layout_for(count):
                return PRESETS[name]
    return None


def _meaning(preset: SensorPreset, count: int) -> tuple[str, ...]:
    layout = preset.layout_for(count) or ()
    return tuple(preset.common_names.get(b, b) for b in layout)


def presets_for(count: int) -> list[str]:
    """Names of the presets with a layout of ``count`` bands (for hints)."""
    return sorted(name for name, preset in PRESETS.items() if preset.layout_for(count))


def default_band_names(count: int, colorinterp: Sequence[str]) -> tuple[str, ...]:
    """Band names for a file without a preset: colour names where given, else ``band1``..."""
    names = []
    for i in range(count):
        colour = colorinterp[i].lower() if i < len(colorinterp) else ""
        names.append(colour if colour in ("red", "green", "blue", "alpha") else f"band{i + 1}")
    return tuple(names)

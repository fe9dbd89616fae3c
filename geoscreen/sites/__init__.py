"""Candidate sites: flagged tiles merged into places, their files, evidence and history.

- :mod:`geoscreen.sites.site`: the site table schema, GeoParquet/GPKG IO
- :mod:`geoscreen.sites.extract`: score map -> sites (threshold, merge, minimum area)
- :mod:`geoscreen.sites.detections`: detected objects -> sites (one per object)
- :mod:`geoscreen.sites.evidence`: PNG evidence chips with the site outline
- :mod:`geoscreen.sites.match`: matching sites across runs (primitives in :mod:`geoscreen.matching`)
- :mod:`geoscreen.sites.coverage`: which places earlier runs looked at (for ``new_since``)

The names below load on first use (geopandas is slow to import).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from geoscreen.lazy import lazy_attributes

if TYPE_CHECKING:
    from geoscreen.sites.coverage import coverage_of, read_coverage, write_coverage
    from geoscreen.sites.extract import extract_sites
    from geoscreen.sites.match import MatchRule, SiteUpdate, update_sites
    from geoscreen.sites.site import SITE_COLUMNS, read_sites, write_sites

_WHERE = {
    "coverage_of": "coverage",
    "read_coverage": "coverage",
    "write_coverage": "coverage",
    "extract_sites": "extract",
    "MatchRule": "match",
    "SiteUpdate": "match",
    "update_sites": "match",
    "SITE_COLUMNS": "site",
    "read_sites": "site",
    "write_sites": "site",
}

__all__ = [
    "SITE_COLUMNS",
    "MatchRule",
    "SiteUpdate",
    "coverage_of",
    "extract_sites",
    "read_coverage",
    "read_sites",
    "update_sites",
    "write_coverage",
    "write_sites",
]


__getattr__, __dir__ = lazy_attributes(__name__, globals(), _WHERE)

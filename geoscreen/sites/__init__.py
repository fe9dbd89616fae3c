"""Candidate sites: flagged tiles merged into places, their files, evidence and history.

- :mod:`geoscreen.sites.site`: the site table schema, :class:`Site`, GeoParquet/GPKG IO
- :mod:`geoscreen.sites.extract`: score map -> sites (threshold, merge, minimum area)
- :mod:`geoscreen.sites.evidence`: PNG evidence chips with the site outline
- :mod:`geoscreen.sites.match`: matching sites across runs (and the shared matching helpers)
- :mod:`geoscreen.sites.coverage`: which places earlier runs looked at (for ``new_since``)
"""

from geoscreen.sites.coverage import coverage_of, read_coverage, write_coverage
from geoscreen.sites.extract import extract_sites
from geoscreen.sites.match import MatchRule, SiteUpdate, update_sites
from geoscreen.sites.site import SITE_COLUMNS, Site, read_sites, write_sites

__all__ = [
    "SITE_COLUMNS",
    "MatchRule",
    "Site",
    "SiteUpdate",
    "coverage_of",
    "extract_sites",
    "read_coverage",
    "read_sites",
    "update_sites",
    "write_coverage",
    "write_sites",
]

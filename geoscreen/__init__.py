"""geoscreen: a geospatial imagery screening workbench.

A model output means "matches screening profile X" and nothing more; every
decision about a place is a person's.
"""

__version__ = "0.1.0"

"""geoscreen.web."""

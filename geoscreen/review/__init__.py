"""geoscreen.review."""

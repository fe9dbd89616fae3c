"""geoscreen.vision."""

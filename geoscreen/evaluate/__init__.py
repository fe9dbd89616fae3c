"""geoscreen.evaluate."""

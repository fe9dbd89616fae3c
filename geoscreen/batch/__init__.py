"""geoscreen.batch."""

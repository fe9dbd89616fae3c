"""geoscreen.sites."""

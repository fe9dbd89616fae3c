"""Alembic migrations of the review store; run by :func:`geoscreen.review.migrate.upgrade`."""

"""Batch screening: discover scenes, screen what is new, survive crashes, scale out on Dask."""

"""Shared fixtures: paths to the bundled real samples and small generated scenes.

Generated scenes use real CRSs (geoscreen.samples); they test mechanics, never
model quality. Session-scoped scenes are read-only: copy them before changing them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from geoscreen.review.testing import PG_ENV, pg_base_url, pg_schema
from geoscreen.samples import make_sentinel2_like, make_synthetic_scene, sample_path


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``make test``: ``-n 2``) each worker is one of several processes
    on the machine's cores: one torch thread each (and in the processes a test starts).
    Two workers with a thread per core each oversubscribed the cores: small training tests
    ran 30x slower than alone (3 s against 107 s)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


# -- real samples ------------------------------------------------------------------------
@pytest.fixture(scope="session")
def osbs_path() -> Path:
    """NEON OSBS_029: 400 x 400 RGB, 0.1 m, EPSG:32617, nodata 255 declared."""
    return sample_path("neon_osbs")


@pytest.fixture(scope="session")
def osbs_labels_path() -> Path:
    """61 tree-crown boxes on OSBS_029 (CSV, pixel coordinates)."""
    return sample_path("neon_osbs_labels")


@pytest.fixture(scope="session")
def yell_path() -> Path:
    """NEON YELL crop: 1249 x 1035 RGB PNG without georeference (pixel space)."""
    return sample_path("neon_yell")


@pytest.fixture(scope="session")
def yell_labels_path() -> Path:
    """279 tree-crown boxes on the YELL crop (Pascal VOC XML)."""
    return sample_path("neon_yell_labels")


@pytest.fixture(scope="session")
def rmnp_path() -> Path:
    """Rocky Mountain NP RGB: 485 x 373, EPSG:4326, nodata 255."""
    return sample_path("rmnp_rgb")


@pytest.fixture(scope="session")
def rmnp_boundary_path() -> Path:
    """The park boundary polygon (Shapefile, EPSG:4326)."""
    return sample_path("rmnp_boundary")


# -- generated scenes --------------------------------------------------------------------
@pytest.fixture(scope="session")
def scene_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session folder for the shared generated scenes."""
    return tmp_path_factory.mktemp("scenes")


@pytest.fixture(scope="session")
def sentinel2_path(scene_dir: Path) -> Path:
    """Sentinel-2 L2A-like: 13 bands uint16, 96 x 80, EPSG:32643, 10 m, nodata 0 on a
    12-pixel left/top margin, band names B01..B12, acquired 2024-01-15T05:31:21Z."""
    return make_sentinel2_like(scene_dir / "s2_like.tif", 96, 80, nodata_margin=12, blocksize=32)


@pytest.fixture(scope="session")
def rgb_path(scene_dir: Path) -> Path:
    """3-band uint8, 160 x 120, EPSG:32633, 10 m, nodata 0 on a 40-pixel left/top margin,
    four bright square structures, 64-pixel blocks."""
    return make_synthetic_scene(
        scene_dir / "rgb.tif", 160, 120, nodata=0, nodata_margin=40, structures=4, blocksize=64
    )


@pytest.fixture
def make_scene(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``make_scene(width, height, **make_synthetic_scene options)`` in tmp_path."""
    counter = iter(range(1_000_000))

    def make(width: int = 64, height: int = 64, name: str | None = None, **options: Any) -> Path:
        path = tmp_path / (name or f"scene_{next(counter)}.tif")
        return make_synthetic_scene(path, width, height, **options)

    return make


# -- review stores ------------------------------------------------------------------------
# Store tests (tests/review, tests/security) run on SQLite and, with GEOSCREEN_TEST_PG_URL
# set (.ci/run starts a cluster with .ci/postgres.sh), on PostgreSQL + PostGIS.
@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Where a fresh store goes: a SQLite path, or a PostgreSQL URL with its own schema."""
    if request.param == "sqlite":
        yield str(tmp_path / "store.sqlite")
        return
    base = pg_base_url()
    if base is None:
        pytest.skip(f"PostgreSQL tests need {PG_ENV} (run .ci/postgres.sh and export it)")
    with pg_schema(base) as url:
        yield url

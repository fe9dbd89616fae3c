"""Exports: every format and redaction level, recorded in the audit log; geomasking maths."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from geoscreen.errors import ConfigError
from geoscreen.review import audit
from geoscreen.review.errors import AccessError
from geoscreen.review.export import FORMATS, export_candidates, geomask_secret
from geoscreen.review.loader import load_sites
from geoscreen.review.redaction import (
    RedactionConfig,
    count_grid,
    count_regions,
    donut_mask,
    geodesic_distance,
    stable_donut,
)
from geoscreen.review.store import CandidateFilter, Store
from geoscreen.review.workflow import set_status

PARTNER = RedactionConfig(level="partner", min_m=300, max_m=900)
PUBLIC = RedactionConfig(level="public", grid_m=50_000, min_count=3)


@pytest.fixture
def reviewed(store: Store, sites: Callable[..., Path]) -> Store:
    load_sites(store, sites(60, bounds=(76.0, 28.0, 77.0, 29.0)), actor="test")
    for cid in (1, 2, 3):
        set_status(store, cid, "confirmed", user="ann", reason="kiln rows", claim=True)
        set_status(store, cid, "escalated", user="sue", reason="share with partner")
    set_status(store, 4, "confirmed", user="ann", reason="kiln rows", claim=True)
    return store


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    """An empty folder for export files (the store and sites sit in tmp_path)."""
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def _read(path: Path, fmt: str) -> pd.DataFrame:
    if fmt == "parquet":
        return gpd.read_parquet(path)
    if fmt == "csv":
        return pd.read_csv(path)
    return gpd.read_file(path)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_internal_export_every_format(reviewed: Store, out_dir: Path, fmt: str) -> None:
    out = out_dir / f"all{FORMATS[fmt][1]}"
    result = export_candidates(
        reviewed,
        out,
        user="ann",
        format=fmt,
        where=CandidateFilter(statuses=("confirmed", "escalated")),
    )
    assert (result.features, result.candidates, result.redaction) == (4, 4, "internal")
    assert result.sha256 == hashlib.sha256(out.read_bytes()).hexdigest()
    back = _read(out, fmt)
    assert len(back) == 4
    if fmt == "csv":
        geoms = shapely.from_wkt(back["wkt"])
        assert set(back["match"]) == {"matches profile brick_kilns_s2"}
    else:
        geoms = back.geometry.values
    truth = {c.id: c.geometry for c in reviewed.candidates()}
    if fmt != "kml":  # KML keeps its own placemark ids
        for cid, geom in zip(back["id"], geoms, strict=True):
            assert shapely.equals_exact(geom, truth[int(cid)], tolerance=1e-9)
    entry = list(audit.entries(reviewed, entity="export"))[-1].to_dict()
    assert entry["actor"] == "ann" and entry["after"]["sha256"] == result.sha256
    assert entry["after"]["redaction"] == {"level": "internal"}
    assert entry["after"]["filters"]["statuses"] == ["confirmed", "escalated"]
    assert audit.verify(reviewed).ok
    assert [p.name for p in out_dir.iterdir()] == [out.name]


@pytest.mark.parametrize("fmt", ["geojson", "gpkg", "kml"])
def test_partner_export_moves_points_within_the_ring(
    reviewed: Store, out_dir: Path, fmt: str
) -> None:
    out = out_dir / f"partner{FORMATS[fmt][1]}"
    result = export_candidates(reviewed, out, user="sam", format=fmt, redaction=PARTNER)
    assert result.features == 3  # escalated only
    back = gpd.read_file(out)
    assert set(back.geom_type) == {"Point"}
    exact = reviewed.frame(CandidateFilter(statuses=("escalated",)))
    moved = np.array([[p.x, p.y] for p in back.geometry])
    # Each displaced point is 300-900 m from exactly one original, never closer.
    for lon, lat in zip(exact["lon"], exact["lat"], strict=True):
        d = geodesic_distance(np.full(3, lon), np.full(3, lat), moved[:, 0], moved[:, 1])
        assert ((d >= 300 - 1e-6) & (d <= 900 + 1e-6)).sum() >= 1
        assert d.min() >= 300 - 1e-6
    text = out.read_text(errors="ignore") if fmt != "gpkg" else ""
    for secret in ("kiln rows", "evidence/", "ann", "sue", "site-00"):
        assert secret not in text
    entry = list(audit.entries(reviewed, entity="export"))[-1].to_dict()
    assert entry["after"]["redaction"] == {"level": "partner", "min_m": 300.0, "max_m": 900.0}


def test_partner_rules(reviewed: Store, out_dir: Path) -> None:
    with pytest.raises(AccessError, match="needs supervisor"):
        export_candidates(reviewed, out_dir / "p.geojson", user="ann", redaction=PARTNER)
    with pytest.raises(ConfigError, match="escalated candidates only"):
        export_candidates(
            reviewed,
            out_dir / "p.geojson",
            user="sue",
            redaction=PARTNER,
            where=CandidateFilter(statuses=("confirmed",)),
        )
    a = export_candidates(reviewed, out_dir / "a.geojson", user="sue", redaction=PARTNER, seed=7)
    b = export_candidates(reviewed, out_dir / "b.geojson", user="sue", redaction=PARTNER, seed=7)
    export_candidates(reviewed, out_dir / "c.geojson", user="sue", redaction=PARTNER)
    assert a.sha256 == b.sha256  # same row order, same points
    assert sorted(p.name for p in out_dir.iterdir()) == ["a.geojson", "b.geojson", "c.geojson"]
    assert _points(out_dir / "a.geojson") == _points(out_dir / "c.geojson")


def _points(path: Path) -> dict[int, tuple[float, float]]:
    """Displaced point by candidate id."""
    frame = gpd.read_file(path)
    return {int(i): (p.x, p.y) for i, p in zip(frame["id"], frame.geometry, strict=True)}


def test_partner_geomask_is_stable_so_averaging_gains_nothing(
    reviewed: Store, out_dir: Path
) -> None:
    """Thirty exports: each candidate shows one point; their mean is as far out as any."""
    exact = reviewed.frame(CandidateFilter(statuses=("escalated",))).set_index("id")
    runs = [
        _points(
            Path(
                export_candidates(
                    reviewed, out_dir / f"p{i}.geojson", user="sue", redaction=PARTNER
                ).path
            )
        )
        for i in range(30)
    ]
    for cid, row in exact.iterrows():
        shown = np.array([run[int(cid)] for run in runs])
        assert np.ptp(shown, axis=0).max() == 0.0  # the very same point every time
        mean = shown.mean(axis=0)
        (from_truth,) = geodesic_distance(
            np.array([row["lon"]]), np.array([row["lat"]]), mean[:1], mean[1:]
        )
        assert 300 - 1e-6 <= from_truth <= 900 + 1e-6
    # fresh draws per export, as before, would have averaged back towards the truth
    rng = np.random.default_rng(0)
    lon0, lat0 = np.full(30, 77.0), np.full(30, 28.5)
    lons, lats, _ = donut_mask(lon0, lat0, min_m=300, max_m=900, rng=rng)
    (naive,) = geodesic_distance(lon0[:1], lat0[:1], lons.mean(keepdims=True),
                                 lats.mean(keepdims=True))  # fmt: skip
    assert naive < 300


def test_geomask_secret_stays_in_the_store(reviewed: Store, out_dir: Path, store: Store) -> None:
    """The points come from the store's secret (not the ids alone); no export holds it."""
    secret = geomask_secret(reviewed)
    assert len(secret) == 32 and geomask_secret(reviewed) == secret
    exact = reviewed.frame(CandidateFilter(statuses=("escalated",))).sort_values("id")
    keys = [str(i) for i in exact["id"]]
    lon, lat = exact["lon"].to_numpy(), exact["lat"].to_numpy()
    mine = stable_donut(lon, lat, keys, secret=secret, min_m=300, max_m=900)
    other = stable_donut(lon, lat, keys, secret=b"another store", min_m=300, max_m=900)
    assert not np.allclose(mine[0], other[0])
    wider = stable_donut(lon, lat, keys, secret=secret, min_m=300, max_m=2000)
    bearing = np.degrees(np.arctan2(mine[0] - lon, mine[1] - lat))
    wider_bearing = np.degrees(np.arctan2(wider[0] - lon, wider[1] - lat))
    assert not np.allclose(bearing, wider_bearing, atol=1.0)  # not one ray from the truth
    export_candidates(reviewed, out_dir / "p.gpkg", user="sue", redaction=PARTNER)
    export_candidates(reviewed, out_dir / "all.geojson", user="ann")
    export_candidates(reviewed, out_dir / "pub.csv", user="sue", redaction=PUBLIC)
    for path in out_dir.iterdir():
        data = path.read_bytes()
        assert secret.hex().encode() not in data and secret not in data
    logged = json.dumps([e.to_dict() for e in audit.entries(reviewed)])
    assert secret.hex() not in logged


def test_public_counts_leave_rejected_out(reviewed: Store, out_dir: Path) -> None:
    everywhere = gpd.GeoDataFrame(geometry=[shapely.box(70, 20, 80, 35)], crs="EPSG:4326")
    export_candidates(reviewed, out_dir / "before.csv", user="sue", redaction=PUBLIC,
                      regions=everywhere)  # fmt: skip
    assert pd.read_csv(out_dir / "before.csv")["count"].tolist() == [60]
    for cid in (10, 11, 12):
        set_status(reviewed, cid, "rejected", user="ann", reason="a quarry", claim=True)
    result = export_candidates(reviewed, out_dir / "after.csv", user="sue", redaction=PUBLIC,
                               regions=everywhere)  # fmt: skip
    table = pd.read_csv(out_dir / "after.csv")
    assert table["count"].tolist() == [57] and result.candidates == 57
    grid = export_candidates(reviewed, out_dir / "grid.geojson", user="sue", redaction=PUBLIC)
    notes = set(gpd.read_file(grid.path)["note"])
    assert notes and all("rejected candidates are not counted" in n for n in notes)
    with pytest.raises(ConfigError, match="never include rejected"):
        export_candidates(reviewed, out_dir / "r.csv", user="sue", redaction=PUBLIC,
                          where=CandidateFilter(statuses=("rejected",)))  # fmt: skip
    entry = list(audit.entries(reviewed, entity="export"))[-1].to_dict()
    assert "rejected" not in entry["after"]["filters"]["statuses"]


def test_public_grid_suppresses_small_counts(reviewed: Store, out_dir: Path) -> None:
    out = out_dir / "public.parquet"
    result = export_candidates(reviewed, out, user="sue", redaction=PUBLIC)
    cells = gpd.read_parquet(out)
    assert result.candidates == 60
    assert (cells["count"] >= 3).all() and cells["count"].sum() <= 60
    assert set(cells.columns) == {"cell", "count", "match", "note", "geometry"}
    strict = RedactionConfig(level="public", grid_m=50_000, min_count=61)
    export_candidates(reviewed, out_dir / "none.geojson", user="sue", redaction=strict)
    assert len(gpd.read_file(out_dir / "none.geojson")) == 0


def test_public_regions(reviewed: Store, out_dir: Path) -> None:
    regions = gpd.GeoDataFrame(
        {"name": ["west", "east", "far"]},
        geometry=[
            shapely.box(76, 28, 76.5, 29),
            shapely.box(76.5, 28, 77, 29),
            shapely.box(0, 0, 1, 1),
        ],
        crs="EPSG:4326",
    )
    out = out_dir / "regions.csv"
    export_candidates(reviewed, out, user="ada", redaction=PUBLIC, regions=regions)
    table = pd.read_csv(out)
    assert list(table["name"]) == ["west", "east", "far"]
    assert table["count"].iloc[:2].sum() == 60 and pd.isna(table["count"].iloc[2])
    assert list(table["suppressed"]) == [False, False, True]


def test_filters_area_and_empty_exports(reviewed: Store, out_dir: Path) -> None:
    area = shapely.box(76.0, 28.0, 76.5, 28.5)
    result = export_candidates(reviewed, out_dir / "area.gpkg", user="ann", area=area)
    inside = [c for c in reviewed.candidates() if shapely.intersects(c.geometry, area)]
    assert result.features == len(inside) > 0
    for fmt in FORMATS:
        out = out_dir / f"empty{FORMATS[fmt][1]}"
        empty = export_candidates(reviewed, out, user="ann", where=CandidateFilter(profile="x"))
        assert empty.features == 0 and len(_read(out, fmt)) == 0


def test_refused_export_writes_nothing(reviewed: Store, out_dir: Path) -> None:
    before = len(list(audit.entries(reviewed)))
    with pytest.raises(AccessError):
        export_candidates(reviewed, out_dir / "x.geojson", user="vic")
    with pytest.raises(ConfigError, match="cannot tell the format"):
        export_candidates(reviewed, out_dir / "x.txt", user="ann")
    assert list(out_dir.iterdir()) == [] and len(list(audit.entries(reviewed))) == before


@settings(max_examples=60, deadline=None)
@given(
    lon=st.floats(-179.9, 179.9),
    lat=st.floats(-84.0, 84.0),
    min_m=st.floats(0.0, 20_000.0),
    width=st.floats(1.0, 50_000.0),
    seed=st.integers(0, 2**32),
)
def test_donut_never_inside_min(
    lon: float, lat: float, min_m: float, width: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    lons, lats = np.full(50, lon), np.full(50, lat)
    new_lon, new_lat, moved = donut_mask(lons, lats, min_m=min_m, max_m=min_m + width, rng=rng)
    d = geodesic_distance(lons, lats, new_lon, new_lat)
    assert np.all(d >= min_m - 1e-6) and np.all(d <= min_m + width + 1e-6)
    np.testing.assert_allclose(d, moved, atol=1e-6)


def test_donut_is_uniform_over_the_ring() -> None:
    rng = np.random.default_rng(0)
    n = 20_000
    _, _, d = donut_mask(np.zeros(n), np.zeros(n), min_m=1000, max_m=2000, rng=rng)
    inner_share = np.mean(d < 1500)  # area of 1000-1500 ring / area of 1000-2000 ring
    assert inner_share == pytest.approx((1500**2 - 1000**2) / (2000**2 - 1000**2), abs=0.02)


def test_grid_counts_in_metres() -> None:
    # 5 points within 100 m of each other and 2 far away: one cell of 5 shown, the 2 suppressed.
    pts = gpd.GeoSeries(
        shapely.points([10.0, 10.0005, 10.001, 10.0002, 10.0007, 20.0, 20.0001], [50.0] * 7),
        crs="EPSG:4326",
    )
    cells = count_grid(pts, grid_m=1000, min_count=3)
    xy = pts.to_crs("EPSG:6933")
    keys = Counter(zip(np.floor(xy.x / 1000), np.floor(xy.y / 1000), strict=True))
    assert sorted(cells["count"]) == sorted(n for n in keys.values() if n >= 3)
    assert cells["count"].sum() >= 3  # the five close points share at most two cells
    area = cells.to_crs("EPSG:6933").area
    assert np.allclose(area, 1000 * 1000)
    regions = gpd.GeoDataFrame(geometry=[shapely.box(9, 49, 11, 51)], crs="EPSG:4326")
    assert count_regions(pts, regions, min_count=5)["count"].tolist() == [5]


def test_bad_redaction_settings() -> None:
    with pytest.raises(ValueError, match="must be above min_m"):
        RedactionConfig(level="partner", min_m=500, max_m=400)
    with pytest.raises(ValueError):
        RedactionConfig(level="public", grid_m=0)
    assert json.dumps(PUBLIC.describe()) == '{"level": "public", "grid_m": 50000.0, "min_count": 3}'

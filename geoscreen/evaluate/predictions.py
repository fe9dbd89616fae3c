"""Predictions to evaluate, from geoscreen or from any other tool.

Comparing geoscreen with another model needs that model's output as it comes:

* a geoscreen site table (``geoscreen sites extract``), scored by ``score_max``; a
  detection screen's ``objects.parquet`` (every object) is one too, and records the
  threshold in force, which precision, recall and F1 then apply (AP ranks every object);
* any vector file (GeoParquet, GeoPackage, GeoJSON, Shapefile, FlatGeobuf) with a
  geometry and a score column (``score`` unless named otherwise), e.g. detections
  exported from QGIS or another pipeline; a file without a CRS is read as pixel
  coordinates of the image given with it;
* a CSV of pixel boxes as DeepForest writes them (``xmin, ymin, xmax, ymax`` and a
  score, optionally ``label`` and ``image_path``), with the image they were predicted
  on: rows naming another image are left out (and counted), the boxes are placed on
  the image's grid (its CRS when it has one).

A screen's ``tiles.parquet`` is refused: its tiles overlap and are each scored, so
matched to objects nearly all count as false positives. A classify screen is measured
by its ``scores.tif`` at labelled places (:mod:`geoscreen.evaluate.at_labels`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio.errors
import shapely
from affine import Affine

from geoscreen.errors import InputError
from geoscreen.imagery.scene import Scene
from geoscreen.labels import VECTOR_SUFFIXES
from geoscreen.sites.site import THRESHOLD_COLUMN, read_sites, recorded_threshold

DEFAULT_SCORE = "score"
SITE_SCORE = "score_max"
SITE_COLUMNS = ("site_id", SITE_SCORE, "profile")
TILE_COLUMNS = ("tile_id", "col_off", "row_off", "tile_size", "score")  # a screen's tiles.parquet
BOX_COLUMNS = ("xmin", "ymin", "xmax", "ymax")
TABLE_SUFFIXES = (".parquet", ".geoparquet")


@dataclass(frozen=True)
class Predictions:
    """Predicted objects (a GeoDataFrame in a CRS, or pixel space) and how they were read."""

    frame: gpd.GeoDataFrame
    score_column: str
    kind: str  # "site table", "vector file" or "csv boxes"
    other_image: int = 0  # CSV rows for other images, left out
    threshold: float | None = None  # the threshold in force an objects table records

    def describe(self) -> dict[str, object]:
        """For the report's inputs."""
        return {"kind": self.kind, "score_column": self.score_column,
                "rows": len(self.frame), "rows_for_other_images": self.other_image,
                "recorded_threshold": self.threshold}  # fmt: skip


def load_predictions(
    path: str | os.PathLike[str], *, score_column: str | None = None, scene: Scene | None = None
) -> Predictions:
    """Read predictions from ``path`` (module doc); ``score_column`` defaults to ``score``
    (``score_max`` for geoscreen site tables). ``scene``: the image pixel coordinates
    refer to (needed for CSV boxes)."""
    source = Path(path)
    if not source.is_file():
        raise InputError("predictions file not found", where=str(source), fix="Check the path.")
    suffix = source.suffix.lower()
    if suffix == ".csv":
        return _csv_boxes(source, score_column or DEFAULT_SCORE, scene)
    if suffix in VECTOR_SUFFIXES or suffix in TABLE_SUFFIXES:
        return _vector(source, score_column, scene)
    raise InputError(
        f"unknown predictions file type {suffix or '(no extension)'!r}",
        where=str(source),
        fix="Give a vector file (GeoParquet, GeoPackage, GeoJSON, Shapefile, FlatGeobuf) "
        "with a score column, or a CSV of pixel boxes (xmin,ymin,xmax,ymax,score) with --image.",
    )


def _vector(source: Path, score_column: str | None, scene: Scene | None) -> Predictions:
    try:
        if source.suffix.lower() in TABLE_SUFFIXES:
            frame = gpd.read_parquet(source)
        else:
            frame = gpd.read_file(source, engine="pyogrio")
    except (ValueError, OSError, ImportError, pyogrio.errors.DataSourceError,
            pyogrio.errors.DataLayerError) as exc:  # fmt: skip
        raise InputError(
            f"cannot read the predictions ({str(exc).splitlines()[0][:160]})",
            where=str(source),
            fix="Give a vector file with a geometry and a score column.",
        ) from None
    if all(c in frame.columns for c in TILE_COLUMNS):
        raise InputError(
            "this is a screen's tile table: overlapping tiles, each scored, not objects "
            "(matching them to objects counts nearly every tile as a false positive)",
            where=str(source),
            fix="Evaluate the scene's scores.tif (beside it) at labelled places "
            "(--predicted .../scores.tif --truth LABELS), or its sites (geoscreen sites "
            "extract) against labelled objects.",
        )
    site_table = all(c in frame.columns for c in SITE_COLUMNS)
    if site_table and score_column is None:
        sites = read_sites(source)
        kind = "objects table" if THRESHOLD_COLUMN in sites else "site table"
        recorded = recorded_threshold(sites, str(source))
        return Predictions(sites, SITE_SCORE, kind, threshold=recorded)
    column = score_column or DEFAULT_SCORE
    _check_score(frame, column, source)
    bad = frame.geometry.isna() | frame.geometry.is_empty
    if bad.any():
        raise InputError(
            f"{int(bad.sum())} of {len(frame)} predictions have no geometry "
            f"(first: row {int(np.flatnonzero(bad.to_numpy())[0])})",
            where=str(source),
            fix="Remove rows without geometry.",
        )
    if frame.crs is None:
        if scene is None:
            raise InputError(
                "the predictions file has no CRS",
                where=str(source),
                fix="Set its CRS, or give --image SCENE if the coordinates are pixels of "
                "that image.",
            )
        frame = _on_image(frame.reset_index(drop=True), scene, source)
    return Predictions(frame.reset_index(drop=True), column, "vector file")


def _csv_boxes(source: Path, column: str, scene: Scene | None) -> Predictions:
    if scene is None:
        raise InputError(
            "CSV predictions are pixel boxes: they need the image they were predicted on",
            where=str(source),
            fix="Give --image IMAGE, or a vector file with a CRS.",
        )
    try:
        table = pd.read_csv(source, encoding="utf-8-sig", skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(
            f"cannot read as CSV ({str(exc).splitlines()[0][:160]})",
            where=str(source),
            fix="Save it as comma-separated UTF-8 text with one header row.",
        ) from None
    table.columns = [str(c).strip().lower() for c in table.columns]
    column = column.strip().lower()
    missing = [c for c in BOX_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(
            f"CSV predictions need {', '.join(BOX_COLUMNS)} columns; no {', '.join(missing)} "
            f"(columns: {', '.join(table.columns)})",
            where=str(source),
            fix="Give pixel boxes as DeepForest writes them, or a vector file.",
        )
    other = 0
    if "image_path" in table.columns:
        mine = table["image_path"].astype(str).map(lambda name: _same_image(name, scene.uri))
        other = int((~mine).sum())
        if other == len(table) and other:
            names = ", ".join(sorted(set(table["image_path"].astype(str)))[:3])
            raise InputError(
                f"none of the {other} predictions are for {Path(scene.uri).name}; "
                f"they name {names}",
                where=str(source),
                fix="Give --image the image the boxes were predicted on.",
            )
        table = table[mine.to_numpy()].reset_index(drop=True)
    _check_score(table, column, source)
    boxes = table[list(BOX_COLUMNS)].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(boxes).all(axis=1) | (boxes[:, 0] >= boxes[:, 2])
    bad |= boxes[:, 1] >= boxes[:, 3]
    if bad.any():
        raise InputError(
            f"{int(bad.sum())} bad boxes (need numbers with xmin < xmax and ymin < ymax; "
            f"first: data row {int(np.flatnonzero(bad)[0]) + 1})",
            where=str(source),
            fix="Correct or remove those rows.",
        )
    frame = gpd.GeoDataFrame(
        table.drop(columns=list(BOX_COLUMNS)),
        geometry=shapely.box(boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]),
    )
    return Predictions(_on_image(frame, scene, source), column, "csv boxes", other)


def _check_score(frame: pd.DataFrame, column: str, source: Path) -> None:
    """The score column exists and holds numbers; converted in place."""
    if column not in frame.columns:
        shown = ", ".join(str(c) for c in frame.columns if c != "geometry")
        raise InputError(
            f"the predictions have no {column!r} column (columns: {shown})",
            where=str(source),
            fix="Name the score column with --score-column.",
        )
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() | ~np.isfinite(values.to_numpy(np.float64, na_value=np.nan))
    if bad.any():
        raise InputError(
            f"{int(bad.sum())} predictions have no numeric {column!r} "
            f"(first: data row {int(np.flatnonzero(bad.to_numpy())[0]) + 1})",
            where=str(source),
            fix="Give every prediction a score, or name another column with --score-column.",
        )
    frame[column] = values.astype(np.float64)


def _on_image(frame: gpd.GeoDataFrame, scene: Scene, source: Path) -> gpd.GeoDataFrame:
    """Pixel-space geometries placed on ``scene``: its CRS when georeferenced."""
    if not scene.georeferenced:
        return frame
    if scene.warp is not None:
        raise InputError(
            "pixel-coordinate predictions refer to the original image grid, "
            "but the image was opened reprojected",
            where=str(source),
            fix="Give the image as it was when the predictions were made.",
        )
    placed = _affine(frame.geometry.values, scene.transform)
    return gpd.GeoDataFrame(frame.drop(columns=frame.geometry.name), geometry=placed,
                            crs=scene.crs)  # fmt: skip


def _affine(geoms: np.ndarray, t: Affine) -> np.ndarray:
    def apply(xy: np.ndarray) -> np.ndarray:
        x, y = xy[:, 0], xy[:, 1]
        return np.column_stack([t.a * x + t.b * y + t.c, t.d * x + t.e * y + t.f])

    return np.asarray(shapely.transform(geoms, apply))


def _same_image(name: str, uri: str) -> bool:
    """Same file name or same stem (DeepForest writes names, not paths)."""
    a, b = Path(str(name).replace("\\", "/")), Path(uri)
    return a.name.lower() == b.name.lower() or a.stem.lower() == b.stem.lower()

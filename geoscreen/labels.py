"""Labelled examples: points, boxes and polygons placed on one scene's pixel grid.

:func:`load_labels` reads GeoJSON, GeoPackage, Shapefile, FlatGeobuf, CSV and
Pascal VOC XML, in any CRS (reprojected to the scene's) or in pixel coordinates,
and returns a :class:`LabelSet` in **scene pixel coordinates** (x = column,
y = row, pixel edges at integers, as DeepForest and Pascal VOC boxes are).
Nothing is dropped silently: rows outside the scene, with a bad geometry or no
label, or for another image, are counted in a :class:`LabelReport`.

Which labels are positive: with ``positive_classes``, exactly those class names
(case-insensitive). Without it, ``positive``/``1``/``true``/``yes`` are positive,
``negative``/``0``/``false``/``no`` negative, and a file whose only other class
is one name (e.g. ``Tree`` in a single-class annotation) counts it as positive;
several other class names need ``positive_classes``.

A Pascal VOC annotation of the scene's image without any ``<object>``, or CSV boxes
whose only rows for the image are all zeros (DeepForest's mark of an empty frame), say
the image holds none: it loads as an empty :class:`LabelSet` (a detector trains on it
as background), where any other file without labels is refused. All-zero rows beside
real boxes are left out, not counted as bad boxes.
"""

from __future__ import annotations

import csv
import math
import os
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pyogrio.errors
import shapely
from affine import Affine
from rasterio.crs import CRS
from shapely.geometry.base import BaseGeometry

from geoscreen.errors import InputError
from geoscreen.imagery.scene import Scene, parse_crs

POSITIVE_WORDS = frozenset({"positive", "1", "true", "yes"})
NEGATIVE_WORDS = frozenset({"negative", "0", "false", "no"})
PIXEL = "pixel"
EMPTY_IMAGE = "an annotation without objects"
VECTOR_SUFFIXES = frozenset({".geojson", ".json", ".gpkg", ".shp", ".fgb"})
_BOX_COLUMNS = ("xmin", "ymin", "xmax", "ymax")
_POINT_COLUMNS = (("lon", "lat"), ("longitude", "latitude"), ("x", "y"))
_AREAL = frozenset({"Polygon", "MultiPolygon"})
_POINTS = frozenset({"Point", "MultiPoint"})
_BAD_BOX = "bad box (need numbers with xmin < xmax and ymin < ymax)"


class LabelsForOtherImage(InputError):
    """Every label in the file names another image: with several scenes, not this one's."""


@dataclass
class LabelReport:
    """What happened to each row of a label file."""

    source: str
    format: str
    rows: int = 0
    kept: int = 0
    positives: int = 0
    negatives: int = 0
    other_image: int = 0
    dropped_outside: int = 0
    invalid: int = 0
    clipped: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    dropped: list[tuple[int, str]] = field(default_factory=list)
    classes: dict[str, int] = field(default_factory=dict)
    positive_rule: str = ""
    pixel_coordinates: bool = False  # the file's coordinates were pixels of the image
    empty_image: bool = False  # an annotation of the image without objects (module doc)

    def summary(self) -> str:
        """One line: kept, positives/negatives and every reason rows were not used."""
        text = (
            f"{Path(self.source).name}: {self.kept} of {self.rows} labels kept "
            f"({self.positives} positive, {self.negatives} negative)"
        )
        if self.empty_image:
            text = f"{Path(self.source).name}: {EMPTY_IMAGE} (the image holds none)"
        parts = []
        if self.other_image:
            parts.append(f"{self.other_image} rows for other images ignored")
        if self.dropped_outside:
            parts.append(f"{self.dropped_outside} outside the scene")
        if self.invalid:
            why = ", ".join(f"{n} {r}" for r, n in self.reasons.most_common())
            parts.append(f"{self.invalid} invalid ({why})")
        if self.clipped:
            parts.append(f"{self.clipped} clipped at the scene edge")
        return "; ".join([text, *parts])


@dataclass(frozen=True)
class LabelSet:
    """Labels on one scene: ``frame`` is in pixel coordinates (x = col, y = row).

    Columns: ``label`` (class name), ``positive`` (bool), ``source_row`` (row in
    the file, 0-based), ``geometry`` (pixel space) and, for a georeferenced
    scene, ``geometry_crs`` (the label in the scene's CRS, before clipping).
    """

    frame: gpd.GeoDataFrame
    scene: Scene
    report: LabelReport

    def __len__(self) -> int:
        return len(self.frame)

    def centres(self) -> np.ndarray:
        """(N, 2) float array of label centres as (col, row)."""
        if len(self.frame) == 0:
            return np.zeros((0, 2), dtype=np.float64)
        return shapely.get_coordinates(shapely.centroid(self.frame.geometry.values))

    def boxes_px(self) -> np.ndarray:
        """(N, 4) float array of pixel boxes (xmin, ymin, xmax, ymax); points are zero-size."""
        if len(self.frame) == 0:
            return np.zeros((0, 4), dtype=np.float64)
        return np.asarray(shapely.bounds(self.frame.geometry.values), dtype=np.float64)

    def positives(self) -> LabelSet:
        """The positive labels only."""
        return replace(self, frame=self.frame[self.frame["positive"]].copy())

    def negatives(self) -> LabelSet:
        """The negative labels only."""
        return replace(self, frame=self.frame[~self.frame["positive"]].copy())

    def narrowed(self, negative_classes: Sequence[str] | None) -> LabelSet:
        """Only the named classes as negatives (positives kept); every other row unused.
        ``None`` or empty: every non-positive class is a negative."""
        if not negative_classes:
            return self
        wanted = {c.strip().casefold() for c in negative_classes}
        frame = self.frame
        keep = frame["positive"] | frame["label"].astype(str).str.casefold().isin(wanted)
        return replace(self, frame=frame[keep].copy())


def check_classes(
    seen: Iterable[str],
    positive_classes: Sequence[str] | None,
    negative_classes: Sequence[str] | None,
    where: str,
) -> None:
    """Refuse a named class that the labels do not hold, listing the classes found."""
    found = {str(c).casefold() for c in seen}
    named = [*(positive_classes or []), *(negative_classes or [])]
    missing = [c for c in named if c.strip().casefold() not in found]
    if missing:
        raise InputError(
            f"class(es) {', '.join(missing)} do not occur in the labels; classes found: "
            f"{', '.join(sorted({str(c) for c in seen})) or 'none'}",
            where=where,
            fix="Name classes as the label files spell them (--positive / --negative, or "
            "labels.positive_classes in the profile).",
        )


@dataclass
class _Raw:
    """Rows as read: geometry (None if unusable, with a reason), label, coordinate space."""

    format: str
    geoms: list[BaseGeometry | None]
    labels: list[Any]
    rows: list[int]
    problems: dict[int, str]
    crs: CRS | str | None  # a CRS, PIXEL, or None when the file does not say
    other_image: int = 0
    images: tuple[str, ...] = ()
    empty_image: bool = False  # an annotation of this image that holds no object


def load_labels(
    path: str | os.PathLike[str],
    scene: Scene,
    *,
    positive_classes: Sequence[str] | None = None,
    label_column: str = "label",
    crs: str | int | CRS | None = None,
    layer: str | None = None,
    match_image: bool = True,
) -> LabelSet:
    """Read labelled examples for ``scene`` and place them on its pixel grid.

    ``crs`` says what coordinates a CSV (x/y, boxes, WKT) or a file without CRS
    is in: a CRS, or ``"pixel"``. With ``match_image``, CSV rows whose
    ``image_path`` (or a VOC file whose ``filename``) names another image than
    the scene's file are ignored (same file name or same stem).
    """
    source = os.fspath(path)
    if not os.path.isfile(source):
        raise InputError("label file not found", where=source, fix="Check the path.")
    suffix = Path(source).suffix.lower()
    override = _coordinate_space(crs)
    if suffix == ".csv":
        raw = _read_csv(source, scene, label_column, override, match_image)
    elif suffix == ".xml":
        raw = _read_voc(source, scene, match_image)
    elif suffix in VECTOR_SUFFIXES:
        raw = _read_vector(source, label_column, override, layer)
    else:
        raise InputError(
            f"unknown label file type {suffix or '(no extension)'!r}",
            where=source,
            fix="Use GeoJSON, GeoPackage, Shapefile, FlatGeobuf, CSV "
            "(image_path,xmin,ymin,xmax,ymax,label or lon/lat or x/y columns) or Pascal VOC XML.",
        )
    return _place(raw, scene, source, positive_classes)


def _empty_frame() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {"label": np.asarray([], dtype=object), "positive": np.asarray([], dtype=bool),
         "source_row": np.asarray([], dtype=np.int64)},
        geometry=gpd.GeoSeries([]),
    )  # fmt: skip


def _coordinate_space(crs: str | int | CRS | None) -> CRS | str | None:
    if crs is None:
        return None
    if isinstance(crs, str) and crs.strip().lower() == PIXEL:
        return PIXEL
    return parse_crs(crs)


# -- readers ---------------------------------------------------------------------------
def _read_vector(
    source: str, label_column: str, override: CRS | str | None, layer: str | None
) -> _Raw:
    try:
        frame = gpd.read_file(source, layer=layer)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, OSError) as exc:
        raise InputError(
            f"cannot read as vector data ({exc})",
            where=source,
            fix="Check that the file opens in QGIS; for a GeoPackage, give the layer.",
        ) from None
    column = _find_column(frame.columns, label_column, source)
    file_crs = CRS.from_user_input(frame.crs) if frame.crs is not None else None
    geoms = list(frame.geometry.values)
    return _Raw(
        format=Path(source).suffix.lower().lstrip("."),
        geoms=geoms,
        labels=list(frame[column]),
        rows=list(range(len(frame))),
        problems={i: "missing geometry" for i, g in enumerate(geoms) if g is None},
        crs=override if override is not None else file_crs,
    )


def _read_csv(
    source: str, scene: Scene, label_column: str, override: CRS | str | None, match_image: bool
) -> _Raw:
    try:
        with open(source, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [c.strip().lower() for c in next(reader, [])]
            records = [
                {h: (row[j].strip() if j < len(row) else "") for j, h in enumerate(header)}
                for row in reader
                if any(c.strip() for c in row)
            ]
    except (csv.Error, UnicodeDecodeError, OSError) as exc:
        raise InputError(
            f"cannot read as CSV ({exc})",
            where=source,
            fix="Save it as comma-separated UTF-8 text with one header row.",
        ) from None
    if not header:
        raise InputError(
            "the CSV file is empty", where=source, fix="Add a header and one row per label."
        )
    column = _find_column(header, label_column, source)
    rows = list(range(len(records)))
    other = 0
    images: tuple[str, ...] = ()
    if match_image and "image_path" in header:
        mine = [_same_image(r["image_path"], scene.uri) for r in records]
        other = mine.count(False)
        images = tuple(
            sorted({r["image_path"] for r, m in zip(records, mine, strict=True) if not m})
        )
        rows = [i for i in rows if mine[i]]
    problems: dict[int, str] = {}
    geoms: list[BaseGeometry | None] = []
    space: CRS | str | None = override
    empty_image = False
    if all(c in header for c in _BOX_COLUMNS):
        # DeepForest's mark of an image without objects: a row whose box is all zeros
        empty = {i for i in rows if _numbers([records[i][c] for c in _BOX_COLUMNS]) == [0.0] * 4}
        rows = [i for i in rows if i not in empty]
        empty_image = bool(empty) and not rows
        for i in rows:
            geoms.append(_box([records[i][c] for c in _BOX_COLUMNS]))
            if geoms[-1] is None:
                problems[i] = _BAD_BOX
        space, fmt = (override if override is not None else PIXEL), "csv boxes"
    elif "wkt" in header or "geometry" in header:
        key = "wkt" if "wkt" in header else "geometry"
        text = np.asarray([records[i][key] for i in rows], dtype=object)
        geoms = list(shapely.from_wkt(text, on_invalid="ignore"))
        problems = {
            r: "unreadable WKT geometry" for r, g in zip(rows, geoms, strict=True) if g is None
        }
        fmt = "csv wkt"
    else:
        pair = next((p for p in _POINT_COLUMNS if all(c in header for c in p)), None)
        if pair is None:
            raise InputError(
                f"CSV has no coordinate columns (columns: {', '.join(header)})",
                where=source,
                fix="Give xmin,ymin,xmax,ymax (boxes), lon,lat or x,y (points) or wkt columns.",
            )
        for i in rows:
            xy = _numbers([records[i][c] for c in pair])
            geoms.append(shapely.Point(*xy) if xy is not None else None)
            if xy is None:
                problems[i] = "missing or non-numeric coordinates"
        if override is None and pair != ("x", "y"):
            space = CRS.from_epsg(4326)
        fmt = "csv points"
    labels = [records[i][column] for i in rows]
    return _Raw(fmt, geoms, labels, rows, problems, space, other, images[:5], empty_image)


def _read_voc(source: str, scene: Scene, match_image: bool) -> _Raw:
    try:
        root = ET.parse(source).getroot()
    except (ET.ParseError, OSError) as exc:
        raise InputError(
            f"cannot read as XML ({exc})", where=source, fix="Give a Pascal VOC annotation file."
        ) from None
    if root.tag != "annotation":
        raise InputError(
            f"not a Pascal VOC annotation (root element <{root.tag}>)",
            where=source,
            fix="Give a Pascal VOC XML file (<annotation> with <object> boxes).",
        )
    filename = (root.findtext("filename") or "").strip()
    size = _numbers([root.findtext("size/width"), root.findtext("size/height")])
    objects = root.findall("object")
    if match_image and filename and not _same_image(filename, scene.uri):
        return _Raw("voc", [], [], [], {}, PIXEL, other_image=len(objects), images=(filename,))
    if match_image and size and (int(size[0]), int(size[1])) != (scene.width, scene.height):
        raise InputError(
            f"the annotation is for a {size[0]:g} x {size[1]:g} image but the scene is "
            f"{scene.width} x {scene.height}",
            where=source,
            fix="Use the image the boxes were drawn on (pixel boxes do not survive resampling).",
        )
    geoms: list[BaseGeometry | None] = []
    labels: list[Any] = []
    problems: dict[int, str] = {}
    for i, obj in enumerate(objects):
        labels.append(obj.findtext("name"))
        geoms.append(_box([obj.findtext(f"bndbox/{k}") for k in _BOX_COLUMNS]))
        if geoms[-1] is None:
            problems[i] = _BAD_BOX
    rows = list(range(len(objects)))
    return _Raw("voc", geoms, labels, rows, problems, PIXEL, empty_image=not objects)


def _numbers(values: Sequence[str | None]) -> list[float] | None:
    """Finite floats from text, or None if any is missing or not a number."""
    try:
        out = [float(v) for v in values if v is not None and v != ""]
    except ValueError:
        return None
    return out if len(out) == len(values) and all(math.isfinite(v) for v in out) else None


def _box(values: Sequence[str | None]) -> BaseGeometry | None:
    """A pixel box from xmin, ymin, xmax, ymax text; None unless finite and non-empty."""
    v = _numbers(values)
    if v is None or v[2] <= v[0] or v[3] <= v[1]:
        return None
    return shapely.box(*v)


def _find_column(columns: Iterable[Any], wanted: str, source: str) -> str:
    names = [str(c) for c in columns]
    for name in names:
        if name.lower() == wanted.lower():
            return name
    shown = ", ".join(n for n in names if n != "geometry") or "none"
    raise InputError(
        f"no {wanted!r} column (columns: {shown})",
        where=source,
        fix=f"Add a {wanted!r} column (positive/negative, 1/0 or class names) "
        "or name the column that holds the labels (label_column=...).",
    )


def _same_image(name: str, uri: str) -> bool:
    a, b = Path(str(name).replace("\\", "/")), Path(uri)
    return a.name.lower() == b.name.lower() or a.stem.lower() == b.stem.lower()


# -- placing on the scene ----------------------------------------------------------------
def _place(
    raw: _Raw, scene: Scene, source: str, positive_classes: Sequence[str] | None
) -> LabelSet:
    report = LabelReport(
        source=source, format=raw.format, rows=len(raw.rows), other_image=raw.other_image
    )
    if not raw.rows:
        if raw.empty_image:  # says the image holds none: a detector's background
            report.empty_image = True
            return LabelSet(frame=_empty_frame(), scene=scene, report=report)
        if raw.other_image or raw.images:
            what = (f"none of the {raw.other_image} labels are" if raw.other_image
                    else "the annotation (without objects) is")  # fmt: skip
            raise LabelsForOtherImage(
                f"{what} for this scene ({Path(scene.uri).name}); they name "
                f"{', '.join(raw.images)}",
                where=source,
                fix="Give the image the labels were drawn on, or match_image=False.",
            )
        raise InputError("the file holds no labels", where=source, fix="Add labelled examples.")
    pixel, in_crs = _to_pixel(raw, scene, source)
    report.pixel_coordinates = raw.crs == PIXEL or (raw.crs is None and not scene.georeferenced)
    problems = dict(raw.problems)
    labels = [_label_text(v) for v in raw.labels]
    extent = (0.0, 0.0, float(scene.width), float(scene.height))
    keep: list[int] = []
    for i, (row, geom) in enumerate(zip(raw.rows, pixel, strict=True)):
        reason = (
            problems.get(row)
            or _geometry_problem(geom)
            or ("missing label" if labels[i] is None else None)
        )
        if reason is not None:
            report.invalid += 1
            report.reasons[reason] += 1
            report.dropped.append((row, reason))
            continue
        assert geom is not None
        inside = _clip(geom, extent)
        if inside is None:
            report.dropped_outside += 1
            report.dropped.append((row, "outside the scene"))
            continue
        if inside is not geom:
            report.clipped += 1
            pixel[i] = inside
        keep.append(i)
    kept_labels = [str(labels[i]) for i in keep]
    flags, report.positive_rule = positive_flags(kept_labels, positive_classes, source)
    report.kept, report.positives = len(keep), int(sum(flags))
    report.negatives = report.kept - report.positives
    report.classes = dict(Counter(kept_labels))
    if not keep:
        raise InputError(
            f"no usable labels: {report.summary()}",
            where=source,
            fix="Check that the labels belong to this scene and are in the CRS the file declares "
            "(or pass crs=...).",
        )
    columns: dict[str, Any] = {
        "label": kept_labels,
        "positive": np.asarray(flags, dtype=bool),
        "source_row": np.asarray([raw.rows[i] for i in keep], dtype=np.int64),
    }
    if in_crs is not None:
        columns["geometry_crs"] = gpd.GeoSeries([in_crs[i] for i in keep], crs=scene.crs)
    frame = gpd.GeoDataFrame(columns, geometry=gpd.GeoSeries([pixel[i] for i in keep]))
    return LabelSet(frame=frame, scene=scene, report=report)


def _to_pixel(
    raw: _Raw, scene: Scene, source: str
) -> tuple[list[BaseGeometry | None], list[BaseGeometry | None] | None]:
    """Geometries in scene pixel space, and in the scene's CRS when it has one."""
    space = raw.crs
    if space is None:
        if scene.georeferenced:
            raise InputError(
                "the labels' coordinate system is unknown and the scene is georeferenced",
                where=source,
                fix="Pass crs='EPSG:...' (the labels' CRS) or crs='pixel' for pixel coordinates.",
            )
        space = PIXEL
    geoms = np.asarray(raw.geoms, dtype=object)
    if space == PIXEL:
        if scene.warp is not None:
            raise InputError(
                "pixel-coordinate labels refer to the original image grid, "
                "but the scene was reprojected",
                where=source,
                fix="Load the labels on the scene as opened, before reprojecting it.",
            )
        in_crs = _affine(geoms, scene.transform) if scene.georeferenced else None
        return list(geoms), in_crs
    assert isinstance(space, CRS)
    if not scene.georeferenced:
        raise InputError(
            f"the labels are in {space.to_string()} but the scene has no georeference",
            where=source,
            fix="Give labels in pixel coordinates for this image (crs='pixel').",
        )
    in_scene_crs = list(gpd.GeoSeries(geoms, crs=space).to_crs(scene.crs).values)
    return _affine(np.asarray(in_scene_crs, dtype=object), ~scene.transform), in_scene_crs


def _affine(geoms: np.ndarray, t: Affine) -> list[BaseGeometry | None]:
    def apply(xy: np.ndarray) -> np.ndarray:
        x, y = xy[:, 0], xy[:, 1]
        return np.column_stack([t.a * x + t.b * y + t.c, t.d * x + t.e * y + t.f])

    return list(shapely.transform(geoms, apply))


def _geometry_problem(geom: BaseGeometry | None) -> str | None:
    if geom is None:
        return "missing geometry"
    if geom.is_empty:
        return "empty geometry"
    if geom.geom_type not in _AREAL | _POINTS:
        return f"unsupported geometry type {geom.geom_type} (use points, boxes or polygons)"
    if not np.isfinite(shapely.get_coordinates(geom)).all():
        return "non-finite coordinates"
    if not geom.is_valid:
        return "invalid polygon (self-intersecting or unclosed)"
    return None


def _clip(geom: BaseGeometry, extent: tuple[float, float, float, float]) -> BaseGeometry | None:
    """``geom`` if inside the extent, the part inside if it crosses the edge, None if outside."""
    x0, y0, x1, y1 = extent
    bx0, by0, bx1, by1 = geom.bounds
    if bx0 >= x0 and by0 >= y0 and bx1 <= x1 and by1 <= y1:
        return geom
    if geom.geom_type in _POINTS:
        pts = [p for p in shapely.get_parts(geom) if x0 <= p.x <= x1 and y0 <= p.y <= y1]
        if not pts:
            return None
        return pts[0] if len(pts) == 1 else shapely.MultiPoint(pts)
    inside = shapely.clip_by_rect(geom, x0, y0, x1, y1)
    return None if inside.is_empty or inside.area == 0 else inside


def _label_text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    text = str(value).strip()
    return text or None


def positive_flags(
    labels: list[str], positive_classes: Sequence[str] | None, source: str
) -> tuple[list[bool], str]:
    """Which of ``labels`` (class names) are positive, and the rule in words (module doc)."""
    if positive_classes is not None:
        wanted = {str(c).strip().casefold() for c in positive_classes}
        return [x.casefold() in wanted for x in labels], f"positive: {', '.join(sorted(wanted))}"
    words = POSITIVE_WORDS | NEGATIVE_WORDS
    others = sorted({x for x in labels if x.casefold() not in words})
    if len(others) > 1:
        raise InputError(
            f"the labels name several classes ({', '.join(others[:8])})",
            where=source,
            fix="Say which count as positive (--positive CLASS, or labels.positive_classes in "
            "the profile); the others are negatives.",
        )
    rule = "positive: positive/1/true/yes" + (
        f", and the only class {others[0]!r}" if others else ""
    )
    return [x.casefold() in POSITIVE_WORDS or x in others for x in labels], rule

"""Ground truth for object-level evaluation: labelled objects as a GeoDataFrame.

With a scene, any label file :func:`geoscreen.labels.load_labels` reads (vector
files in any CRS, CSV boxes/points, Pascal VOC) is placed on it. The result is in the
scene's CRS, or in pixel coordinates (no CRS) for images without georeference. Without
a scene, a vector file with a CRS is read as is.

Either way only positive labels are truth objects, by the rule training uses
(:func:`geoscreen.labels.positive_flags`): ``positive_classes`` names them, else a
file whose ``label`` column holds one class name (or positive/negative words) says
itself, and one with several class names is refused. Until session 22 a vector file
was read whole, so the forest points of a water/forest file counted as water to find.
The classes left out are counted in the frame's ``attrs["not_truth"]``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio.errors

from geoscreen.errors import InputError
from geoscreen.imagery.scene import Scene
from geoscreen.labels import VECTOR_SUFFIXES, check_classes, load_labels, positive_flags

LABEL_COLUMN = "label"


def load_truth(
    path: str | os.PathLike[str],
    scene: Scene | None = None,
    *,
    positive_classes: Sequence[str] | None = None,
) -> gpd.GeoDataFrame:
    """Truth objects (geometry, ``label`` and, with a scene, ``scene_id``); the module
    doc says which labels count."""
    source = Path(path)
    if scene is not None:
        every = load_labels(source, scene, positive_classes=positive_classes)
        check_classes(every.frame["label"].astype(str), positive_classes, None, str(source))
        frame = every.positives().frame
        left_out = _counts(every.negatives().frame["label"])
        if scene.crs is not None:
            geoms = frame["geometry_crs"].values
            crs = scene.crs
        else:
            geoms, crs = frame.geometry.values, None
        out = gpd.GeoDataFrame(
            {"label": frame["label"].to_numpy(), "scene_id": [scene.id] * len(frame)},
            geometry=geoms,
            crs=crs,
        )
        out.attrs["not_truth"] = left_out
        return out
    if not source.is_file():
        raise InputError("truth file not found", where=str(source), fix="Check the path.")
    if source.suffix.lower() not in VECTOR_SUFFIXES:
        raise InputError(
            f"{source.suffix or 'this'} truth needs the image it was drawn on",
            where=str(source),
            fix="Give --image SCENE for CSV/Pascal VOC (pixel) labels, or a vector file "
            "(GeoJSON, GeoPackage, Shapefile) with a CRS.",
        )
    try:
        frame = gpd.read_file(source, engine="pyogrio")
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, ValueError) as exc:
        raise InputError(
            f"cannot read the truth file ({str(exc).splitlines()[0][:160]})",
            where=str(source),
            fix="Give a GeoJSON, GeoPackage or Shapefile.",
        ) from None
    if frame.crs is None:
        raise InputError(
            "the truth file has no CRS",
            where=str(source),
            fix="Set its CRS, or give --image SCENE if the coordinates are pixels of that image.",
        )
    frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty]
    if len(frame) == 0:
        raise InputError("the truth file holds no geometries", where=str(source),
                         fix="Give a file with the labelled objects.")  # fmt: skip
    not_truth: dict[str, int] = {}
    if LABEL_COLUMN in frame.columns:
        names = [str(v).strip() for v in frame[LABEL_COLUMN]]
        check_classes(names, positive_classes, None, str(source))
        flags = np.asarray(positive_flags(names, positive_classes, str(source))[0], dtype=bool)
        not_truth = _counts(frame.loc[~flags, LABEL_COLUMN])
        frame = frame[flags]
        if len(frame) == 0:
            raise InputError("no label in the truth file counts as positive", where=str(source),
                             fix="Name the positive classes with --positive CLASS.")  # fmt: skip
    elif positive_classes:
        raise InputError(
            f"--positive needs a {LABEL_COLUMN!r} column, which the truth file lacks",
            where=str(source),
            fix="Leave --positive out (every feature is then a truth object), or add the column.",
        )
    out = frame.reset_index(drop=True)
    out.attrs["not_truth"] = not_truth
    return out


def _counts(labels: pd.Series) -> dict[str, int]:
    return {str(k): int(v) for k, v in labels.astype(str).value_counts().sort_index().items()}

"""Where scenes come from: folders, globs, list files and STAC catalogs or collections.

:func:`discover` turns each SOURCE of ``geoscreen scan`` into :class:`SceneRef`
items, in a stable order, without opening any raster. Remote STAC URLs are only
read when the user gives them (offline by default).
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from geoscreen.errors import InputError

RASTER_SUFFIXES = frozenset(
    {".tif", ".tiff", ".jp2", ".vrt", ".png", ".jpg", ".jpeg", ".img", ".nc"}
)
# STAC asset keys / roles that hold the analytic image, in order of preference.
STAC_ASSET_KEYS = ("visual", "image", "analytic", "data", "B04", "red")


@dataclass(frozen=True)
class SceneRef:
    """A scene to screen: a GDAL-openable URI and where it was found."""

    uri: str
    source: str
    stac_item: str | None = None
    datetime: str | None = None


def discover(sources: Sequence[str], asset: str | None = None) -> list[SceneRef]:
    """Every scene named by ``sources``, de-duplicated by URI, in a stable order."""
    seen: dict[str, SceneRef] = {}
    for source in sources:
        for ref in _expand(source, asset):
            seen.setdefault(ref.uri, ref)
    return list(seen.values())


def _expand(source: str, asset: str | None) -> Iterable[SceneRef]:
    if source.startswith(("http://", "https://")) or source.endswith(".json"):
        return _stac(source, asset)
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in RASTER_SUFFIXES)
        return [SceneRef(str(p), source) for p in files if p.is_file()]
    if any(ch in source for ch in "*?["):
        matches = sorted(glob.glob(source, recursive=True))
        if not matches:
            raise InputError(
                "the pattern matches no file",
                where=source,
                fix="Check the pattern, or quote it so the shell does not expand it.",
            )
        return [SceneRef(m, source) for m in matches if os.path.isfile(m)]
    if path.is_file() and path.suffix.lower() in (".txt", ".lst", ".list"):
        return _list_file(path)
    if path.is_file():
        return [SceneRef(str(path), source)]
    if source.startswith("/vsi"):
        return [SceneRef(source, source)]
    raise InputError(
        "not found",
        where=source,
        fix="Give a scene file, a folder, a glob, a .txt list of scenes or a STAC catalog JSON.",
    )


def _list_file(path: Path) -> list[SceneRef]:
    refs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        target = text if text.startswith("/vsi") or "://" in text else str(path.parent / text)
        if "://" not in target and not target.startswith("/vsi") and not Path(target).is_file():
            raise InputError(
                f"line {number} names a missing file: {text}",
                where=str(path),
                fix="Fix or remove the line.",
            )
        refs.append(SceneRef(target, str(path)))
    return refs


def _stac(source: str, asset: str | None) -> list[SceneRef]:
    import pystac

    try:
        obj = pystac.read_file(source)
    except (OSError, json.JSONDecodeError, pystac.STACError) as exc:
        raise InputError(
            f"cannot read as STAC ({exc})",
            where=source,
            fix="Give a STAC catalog, collection or item JSON.",
        ) from exc
    if isinstance(obj, pystac.Item):
        items = [obj]
    elif isinstance(obj, pystac.Catalog):  # collections are catalogs too
        items = list(obj.get_items(recursive=True))
    else:
        raise InputError(
            "not a STAC catalog, collection or item",
            where=source,
            fix="Give the catalog.json / collection.json / item JSON.",
        )
    refs = []
    for item in sorted(items, key=lambda i: i.id):
        href = _asset_href(item, asset)
        if href is None:
            raise InputError(
                f"STAC item {item.id!r} has no image asset"
                + (f" named {asset!r}" if asset else ""),
                where=source,
                fix=f"Name the asset with --asset (it has: {', '.join(item.assets)}).",
            )
        when = item.datetime.isoformat() if item.datetime else None
        refs.append(SceneRef(href, source, stac_item=item.id, datetime=when))
    return refs


def _asset_href(item: object, asset: str | None) -> str | None:
    import pystac

    assert isinstance(item, pystac.Item)
    assets = item.assets
    keys = [asset] if asset else list(STAC_ASSET_KEYS)
    for key in keys:
        if key in assets:
            return str(assets[key].get_absolute_href())
    if asset:
        return None
    for value in assets.values():
        if (value.media_type or "").startswith("image/tiff") or "data" in (value.roles or []):
            return str(value.get_absolute_href())
    return None

"""The bundled NEON crops and their labels at another pixel size, for ``detect.py --pixel-m``.

Coarser than 0.1 m: each output pixel is the mean of a ``k x k`` block (an integer
``k``; the edge rows and columns that do not fill a block are dropped). Finer: bilinear
enlargement by an integer factor. Box coordinates scale by the same factor and the VOC
files give the new image size, so the labels fit the new image as the originals fit the
old one; OSBS keeps its georeference with the pixel size changed.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import rasterio
import yaml
from PIL import Image
from rasterio.transform import Affine

from geoscreen.samples import sample_path

NATIVE_M = 0.1
PNG_SAMPLES = ("neon_yell", "neon_yell2", "neon_soap")  # VOC labels, no georeference


def factor_for(pixel_m: float) -> float:
    """Output pixels per input pixel (0.5: twice as coarse); refuses non-integer ratios."""
    ratio = pixel_m / NATIVE_M
    k = round(ratio) if ratio >= 1 else round(1 / ratio)
    if k < 1 or abs((k if ratio >= 1 else 1 / k) - ratio) > 1e-6:
        raise SystemExit(f"--pixel-m {pixel_m}: use 0.1 times or divided by a whole number")
    return 1 / k if ratio >= 1 else float(k)


def _resample(image: np.ndarray, scale: float) -> np.ndarray:
    """(H, W, C) uint8 at ``scale`` (block mean below 1, bilinear above)."""
    if scale < 1:
        k = round(1 / scale)
        h, w = image.shape[0] // k * k, image.shape[1] // k * k
        blocks = image[:h, :w].astype(np.float32).reshape(h // k, k, w // k, k, -1)
        return np.round(blocks.mean(axis=(1, 3))).astype(np.uint8)
    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))


def _box(value: str, scale: float) -> str:
    return str(round(float(value) * scale))


def resampled_neon(pixel_m: float, folder: Path) -> dict[str, Path]:
    """Copies of the NEON samples at ``pixel_m`` in ``folder``: sample name -> path."""
    scale = factor_for(pixel_m)
    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    with rasterio.open(sample_path("neon_osbs")) as src:
        image = _resample(src.read().transpose(1, 2, 0), scale)
        meta = dict(src.profile)
        meta.update(width=image.shape[1], height=image.shape[0],
                    transform=src.transform * Affine.scale(1 / scale))  # fmt: skip
    paths["neon_osbs"] = folder / sample_path("neon_osbs").name
    with rasterio.open(paths["neon_osbs"], "w", **meta) as dst:
        dst.write(image.transpose(2, 0, 1))
    source = sample_path("neon_osbs_labels")
    with source.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    paths["neon_osbs_labels"] = folder / source.name
    with paths["neon_osbs_labels"].open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, **{k: _box(row[k], scale)
                                       for k in ("xmin", "ymin", "xmax", "ymax")}})  # fmt: skip
    for name in PNG_SAMPLES:
        png, voc = sample_path(name), sample_path(f"{name}_labels")
        image = _resample(np.asarray(Image.open(png).convert("RGB")), scale)
        paths[name] = folder / png.name
        Image.fromarray(image).save(paths[name])
        text = re.sub(r"<(xmin|ymin|xmax|ymax)>([\d.]+)</\1>",
                      lambda m: f"<{m[1]}>{_box(m[2], scale)}</{m[1]}>",
                      voc.read_text(encoding="utf-8"))  # fmt: skip
        text = re.sub(r"<width>\d+</width>", f"<width>{image.shape[1]}</width>", text, count=1)
        text = re.sub(r"<height>\d+</height>", f"<height>{image.shape[0]}</height>", text, count=1)
        paths[f"{name}_labels"] = folder / voc.name
        paths[f"{name}_labels"].write_text(text, encoding="utf-8")
    return paths


def resampled_profile(profile: Path, pixel_m: float, folder: Path) -> Path:
    """``profile`` for ``pixel_m`` imagery: the nominal pixel size (the PNGs have no
    georeference) and tiles covering the same ground (40 m, 9.6 m overlap)."""
    scale = factor_for(pixel_m)
    data = yaml.safe_load(profile.read_text(encoding="utf-8"))
    data["imagery"]["resolution_m"] = [pixel_m, pixel_m]
    tiling = data["tiling"]
    tiling["tile_size"] = round(tiling["tile_size"] * scale)
    tiling["overlap"] = round(tiling["overlap"] * scale)
    out = folder / profile.name
    out.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return out

"""Draw a trained detector's boxes over another site's labelled crowns (a diagnosis).

Usage::

    python benchmarks/detect_figure.py --panel MODEL_DIR SITE [X0 Y0 SIDE] ... --out FIG.jpg

Each ``--panel`` detects on the NEON ``SITE`` (``osbs``, ``yell``, ``yell2``, ``soap``)
with the model in ``MODEL_DIR`` as ``screen`` does (fp32, the card's threshold) and draws,
over the image (or its square window ``X0 Y0 SIDE`` in pixels), the labelled crowns in
green and the boxes kept in red. Numbers tell how often a detector is wrong; a picture
tells what it mistakes for a crown.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import rasterio.io
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))
from detect import NEON, PROFILE, detected, neon_file

from geoscreen.profiles import load_profile
from geoscreen.vision.detector import load_detector

PANEL_PX = 640
TRUTH, KEPT = (40, 230, 40), (235, 30, 30)


def _pixel_boxes(frame: gpd.GeoDataFrame, src: rasterio.io.DatasetReader) -> np.ndarray:
    """Bounds of a frame's geometries in the image's pixel grid (rows down); sites come
    in EPSG:4326, truth in the image's CRS, images without one in pixels."""
    if frame.crs is not None and src.crs is not None:
        frame = frame.to_crs(src.crs)
    bounds = frame.geometry.bounds.to_numpy()
    inverse = ~src.transform
    x0, y0 = inverse * (bounds[:, 0], bounds[:, 3])
    x1, y1 = inverse * (bounds[:, 2], bounds[:, 1])
    return np.column_stack([np.minimum(x0, x1), np.minimum(y0, y1),
                            np.maximum(x0, x1), np.maximum(y0, y1)])  # fmt: skip


def panel(model_dir: Path, site: str, window: tuple[int, int, int] | None) -> Image.Image:
    """One drawn panel, :data:`PANEL_PX` square, titled with the model's training sites."""
    loaded = load_detector(model_dir)
    profile = load_profile(PROFILE)
    image_path, labels = neon_file(NEON[site][0]), neon_file(NEON[site][1])
    sites, truth = detected(loaded, profile, image_path, labels)
    threshold = loaded.card.threshold
    kept = sites[sites["score_max"] >= threshold] if threshold is not None else sites
    with rasterio.open(image_path) as src:
        rgb = np.moveaxis(src.read([1, 2, 3]), 0, -1)
        drawn = [(_pixel_boxes(truth, src), TRUTH), (_pixel_boxes(kept, src), KEPT)]
    x0, y0, side = window or (0, 0, max(rgb.shape[:2]))
    scale = PANEL_PX / side
    crop = Image.fromarray(rgb[y0 : y0 + side, x0 : x0 + side].astype(np.uint8))
    out = crop.resize((round(crop.width * scale), round(crop.height * scale)))
    draw = ImageDraw.Draw(out)
    for boxes, colour in drawn:
        for b in boxes:
            corners = [(b[0] - x0) * scale, (b[1] - y0) * scale,
                       (b[2] - x0) * scale, (b[3] - y0) * scale]  # fmt: skip
            draw.rectangle(corners, outline=colour, width=2)
    used = {Path(label.path).name for label in loaded.card.data.labels}
    trained = "+".join(k.upper() for k in NEON if neon_file(NEON[k][1]).name in used)
    draw.rectangle([0, 0, out.width, 18], fill=(0, 0, 0))
    draw.text((4, 3), f"{trained} -> {site.upper()}: labelled crowns green, boxes kept "
              f"(score >= {threshold}) red", fill=(255, 255, 255))  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--panel", nargs="+", action="append", required=True,
                        metavar="MODEL_DIR SITE [X0 Y0 SIDE]")  # fmt: skip
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    panels = []
    for spec in args.panel:
        if len(spec) not in (2, 5) or spec[1] not in NEON:
            parser.error(
                "--panel takes MODEL_DIR SITE [X0 Y0 SIDE], SITE one of " + ", ".join(NEON)
            )
        window = tuple(int(v) for v in spec[2:]) if len(spec) == 5 else None
        panels.append(panel(Path(spec[0]), spec[1], window))  # type: ignore[arg-type]
    figure = Image.new("RGB", (sum(p.width for p in panels) + 8 * (len(panels) - 1),
                               max(p.height for p in panels)), (255, 255, 255))  # fmt: skip
    left = 0
    for p in panels:
        figure.paste(p, (left, 0))
        left += p.width + 8
    figure.save(args.out, quality=82)
    print(f"wrote {args.out} ({figure.width} x {figure.height})")


if __name__ == "__main__":
    main()

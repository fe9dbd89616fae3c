"""Small PNG/JPEG images are decoded once and read from memory, with the same pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from geoscreen.imagery.scene import open_dataset, open_scene
from geoscreen.samples import sample_path


def _write_png(path: Path, pixels: np.ndarray) -> None:
    with rasterio.open(
        path, "w", driver="PNG", width=pixels.shape[2], height=pixels.shape[1],
        count=pixels.shape[0], dtype="uint8",
    ) as dst:  # fmt: skip
        dst.write(pixels)


def test_png_windows_come_from_memory_with_the_same_pixels(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 255, (3, 300, 200), dtype=np.uint8)
    _write_png(tmp_path / "a.png", pixels)
    with open_dataset(str(tmp_path / "a.png")) as src:
        assert src.driver == "GTiff" and src.name.startswith("/vsimem/")
        window = Window(17, 250, 64, 40)
        assert np.array_equal(src.read(window=window), pixels[:, 250:290, 17:81])
        assert (src.width, src.height, src.count) == (200, 300, 3)


def test_png_with_alpha_keeps_its_own_mask(tmp_path: Path) -> None:
    """An alpha band means "invalid" only in the original file: not copied to memory."""
    pixels = np.full((4, 50, 50), 200, dtype=np.uint8)
    pixels[3, :10] = 0
    _write_png(tmp_path / "alpha.png", pixels)
    with open_dataset(str(tmp_path / "alpha.png")) as src:
        assert src.driver == "PNG"
        assert not src.dataset_mask()[:10].any() and src.dataset_mask()[10:].all()


def test_bundled_png_scene_reads_as_before() -> None:
    scene = open_scene(sample_path("neon_soap"), sensor="rgb")
    with scene.open() as src, rasterio.open(sample_path("neon_soap")) as original:
        assert np.array_equal(src.read(), original.read())
        assert src.transform == original.transform and src.crs == original.crs

"""Evidence chips: written per site, sized to the site plus a margin, outline drawn, bounded."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geoscreen.errors import ConfigError
from geoscreen.imagery.scene import Scene, open_scene
from geoscreen.profiles import Profile
from geoscreen.samples import sample_path
from geoscreen.sites.evidence import OUTLINE_RGB, write_evidence
from geoscreen.sites.extract import extract_sites
from geoscreen.vision.scoremap import ScoreMap

MakeProfile = Callable[..., Profile]
MakeScores = Callable[..., ScoreMap]


def test_chip_per_site_with_margin_and_outline(
    tmp_path: Path, utm_scene: Scene, make_profile: MakeProfile, make_scores: MakeScores
) -> None:
    scores = make_scores(utm_scene, 32, 0, [(1, 1), (1, 2), (3, 3)])
    sites = extract_sites(scores, make_profile())
    out = write_evidence(sites, utm_scene, tmp_path / "chips", margin_px=8)
    assert sites["evidence_path"].isna().all()  # the input is not modified
    by_tiles = out.set_index("tile_count")["evidence_path"]
    two = Path(by_tiles[2])
    assert two.is_absolute() and two.name == f"{out.set_index('tile_count').loc[2, 'site_id']}.png"
    # Tiles (1, 1)-(1, 2): columns 32-96, rows 32-64, plus 8 px each side.
    assert Image.open(two).size == (64 + 16, 32 + 16)
    # Tile (3, 3) sits in the corner: the margin is clipped by the scene edge.
    corner = Image.open(by_tiles[1])
    assert corner.size == (32 + 8, 32 + 8)
    pixels = np.asarray(Image.open(two).convert("RGB"))
    assert (pixels == OUTLINE_RGB).all(axis=-1).sum() > 100
    assert pixels.shape[2] == 3


def test_large_sites_are_bounded(
    tmp_path: Path, utm_scene: Scene, make_profile: MakeProfile, make_scores: MakeScores
) -> None:
    everything = [(r, c) for r in range(4) for c in range(4)]
    sites = extract_sites(make_scores(utm_scene, 32, 0, everything), make_profile())
    out = write_evidence(sites, utm_scene, tmp_path, max_px=64)
    assert Image.open(out["evidence_path"].iloc[0]).size == (64, 64)
    with pytest.raises(ConfigError):
        write_evidence(sites, utm_scene, tmp_path, max_px=4)


def test_real_image_without_georeference(
    tmp_path: Path, make_profile: MakeProfile, make_scores: MakeScores
) -> None:
    scene = open_scene(sample_path("neon_yell"))
    sites = extract_sites(make_scores(scene, 64, 0, [(2, 3)]), make_profile(tile_size=64))
    out = write_evidence(sites, scene, tmp_path, margin_px=16)
    chip = np.asarray(Image.open(out["evidence_path"].iloc[0]))
    assert chip.shape == (96, 96, 3)
    # Inside the outline the chip is the image itself, at full resolution.
    with scene.open() as src:
        # The chip starts 16 px before the tile at row 128, column 192.
        data = src.read([1, 2, 3], window=((112 + 40, 112 + 50), (176 + 40, 176 + 50)))
    np.testing.assert_array_equal(chip[40:50, 40:50], np.moveaxis(data, 0, -1))


def test_sites_of_other_scenes_are_left_alone(
    tmp_path: Path, utm_scene: Scene, make_profile: MakeProfile, make_scores: MakeScores
) -> None:
    sites = extract_sites(make_scores(utm_scene, 32, 0, [(1, 1)]), make_profile())
    sites["scene_id"] = "another-scene"
    out = write_evidence(sites, utm_scene, tmp_path)
    assert out["evidence_path"].isna().all() and not list(tmp_path.iterdir())

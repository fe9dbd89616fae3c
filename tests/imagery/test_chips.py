"""Chip sampling: centred labelled chips, seeded background away from positives."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from rasterio.windows import Window

from geoscreen.errors import ConfigError, InputError
from geoscreen.imagery.chips import Chip, chip_window, sample_chips
from geoscreen.imagery.masks import read_valid_mask
from geoscreen.imagery.scene import Scene, open_scene


def _tree_centres(labels_path: Path) -> list[tuple[float, float]]:
    with open(labels_path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [
        ((float(r["xmin"]) + float(r["xmax"])) / 2, (float(r["ymin"]) + float(r["ymax"])) / 2)
        for r in rows
    ]


def _centre(chip: Chip) -> tuple[float, float]:
    return (chip.col_off + chip.size / 2, chip.row_off + chip.size / 2)


def _inside(scene: Scene, chip: Chip) -> bool:
    return (
        0 <= chip.col_off <= scene.width - chip.size
        and 0 <= chip.row_off <= scene.height - chip.size
    )


def test_osbs_tree_chips_reproducible_and_away_from_trees(
    osbs_path: Path, osbs_labels_path: Path
) -> None:
    scene = open_scene(osbs_path)
    trees = _tree_centres(osbs_labels_path)
    assert len(trees) == 61

    def sample(seed: int) -> list[Chip]:
        return sample_chips(
            scene, trees, [], chip_size=32, n_background=20, min_distance_px=25.0, seed=seed
        )

    chips, again, other = sample(7), sample(7), sample(8)
    assert chips == again
    assert chips[:61] == other[:61] and chips[61:] != other[61:]
    positives, background = chips[:61], chips[61:]
    assert [c.source for c in positives] == ["positive"] * 61
    assert {c.label for c in positives} == {1}
    assert len(background) == 20 and {(c.label, c.source) for c in background} == {
        (0, "background")
    }
    assert all(_inside(scene, c) for c in chips)
    centres = np.array([_centre(c) for c in background])
    distances = np.linalg.norm(centres[:, None, :] - np.array(trees)[None, :, :], axis=2)
    assert distances.min() >= 25.0


def test_positive_and_negative_chips_are_centred_and_clamped(osbs_path: Path) -> None:
    scene = open_scene(osbs_path)  # 400 x 400
    chips = sample_chips(
        scene, [(200.5, 100.5), (3.0, 398.0)], [(150.0, 250.0)],
        chip_size=64, n_background=0, min_distance_px=0, seed=0,
    )  # fmt: skip
    middle, corner, negative = chips
    assert abs(_centre(middle)[0] - 200.5) <= 0.5 and abs(_centre(middle)[1] - 100.5) <= 0.5
    assert (corner.col_off, corner.row_off) == (0, 400 - 64)
    assert (negative.label, negative.source) == (0, "negative")
    assert _centre(negative) == (150.0, 250.0)


def test_background_chips_hold_valid_pixels(make_scene: Callable[..., Path]) -> None:
    # Nodata on a wide top/left margin: most random chips there are empty.
    scene = open_scene(make_scene(200, 200, nodata=0, nodata_margin=150))

    def sample(valid_only: bool) -> list[Chip]:
        return sample_chips(
            scene, [], [], chip_size=20, n_background=30, min_distance_px=0.0, seed=3,
            valid_only=valid_only,
        )  # fmt: skip

    checked, unchecked = sample(True), sample(False)
    indexes = list(range(1, scene.count + 1))
    with scene.open() as src:

        def has_data(chip: Chip) -> bool:
            return bool(read_valid_mask(src, scene, chip_window(chip), indexes).any())

        assert all(has_data(c) for c in checked)
        assert not all(has_data(c) for c in unchecked)


def test_impossible_background_request_is_a_config_error(osbs_path: Path) -> None:
    scene = open_scene(osbs_path)
    with pytest.raises(ConfigError, match="found only 0 of 5 background chips"):
        sample_chips(scene, [(200.0, 200.0)], [], chip_size=32, n_background=5,
                     min_distance_px=1_000, seed=0)  # fmt: skip


def test_centre_outside_scene_is_an_input_error(osbs_path: Path) -> None:
    scene = open_scene(osbs_path)
    with pytest.raises(InputError, match="1 positive centre"):
        sample_chips(scene, [(10.0, 10.0), (450.0, 10.0)], [], chip_size=32, n_background=0,
                     min_distance_px=0, seed=0)  # fmt: skip


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"chip_size": 0}, "chip size"),
        ({"n_background": -1}, "background"),
        ({"min_distance_px": float("nan")}, "distance"),
    ],
)
def test_bad_options(osbs_path: Path, options: dict[str, float], message: str) -> None:
    kwargs: dict[str, float] = {"chip_size": 16, "n_background": 1, "min_distance_px": 0, **options}
    with pytest.raises(ConfigError, match=message):
        sample_chips(open_scene(osbs_path), [], [], seed=0, **kwargs)  # type: ignore[arg-type]


def test_chip_window() -> None:
    chip = Chip(row_off=5, col_off=7, size=32, label=1, source="positive")
    assert chip_window(chip) == Window(7, 5, 32, 32)


def test_many_positives_vectorised(make_scene: Callable[..., Path]) -> None:
    scene = open_scene(make_scene(1024, 1024))
    rng = np.random.default_rng(0)
    positives = [tuple(p) for p in rng.uniform(0, 1024, (2000, 2))]
    chips = sample_chips(scene, positives, [], chip_size=16, n_background=300,
                         min_distance_px=8.0, seed=1)  # fmt: skip
    background = np.array([_centre(c) for c in chips if c.source == "background"])
    assert len(background) == 300
    d = np.linalg.norm(background[:, None, :] - np.array(positives)[None], axis=2)
    assert d.min() >= 8.0

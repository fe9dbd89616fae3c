"""Box geometry: flips/rotations that move boxes with the image, clipping, pixel -> map."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
import torch
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st

from geoscreen.imagery.scene import open_scene
from geoscreen.samples import sample_path
from geoscreen.vision.augment import DIHEDRAL, dihedral
from geoscreen.vision.boxes import (
    box_areas_m2,
    boxes_to_map,
    boxes_to_polygons,
    clip_boxes,
    dihedral_boxes,
)


def pixel_bounds(geoms: np.ndarray, transform: Affine | None = None) -> np.ndarray:
    """Pixel boxes of geometries given through ``transform`` (the inverse of the mapping)."""
    inverse = ~(transform or Affine.identity())
    pixel = shapely.transform(
        np.asarray(geoms, dtype=object), lambda xy: np.column_stack(inverse * (xy[:, 0], xy[:, 1]))
    )
    return np.asarray(shapely.bounds(pixel))


def render(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """One mask channel per box (integer pixel-edge boxes cover whole pixels)."""
    out = torch.zeros(len(boxes), height, width, dtype=torch.bool)
    for i, (x0, y0, x1, y1) in enumerate(boxes.round().long().tolist()):
        out[i, y0:y1, x0:x1] = True
    return out


@st.composite
def image_with_boxes(draw: st.DrawFn) -> tuple[int, int, torch.Tensor]:
    h = draw(st.integers(2, 24))
    w = draw(st.integers(2, 24))
    n = draw(st.integers(0, 5))
    boxes = []
    for _ in range(n):
        x0 = draw(st.integers(0, w - 1))
        y0 = draw(st.integers(0, h - 1))
        boxes.append([x0, y0, draw(st.integers(x0 + 1, w)), draw(st.integers(y0 + 1, h))])
    return h, w, torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)


@settings(max_examples=150, deadline=None)
@given(image_with_boxes(), st.integers(0, DIHEDRAL - 1))
def test_dihedral_boxes_move_with_the_image(case: tuple[int, int, torch.Tensor], k: int) -> None:
    h, w, boxes = case
    moved_image = dihedral(render(boxes, h, w), k)
    new_h, new_w = moved_image.shape[-2:]
    moved = dihedral_boxes(boxes, k, h, w)
    assert moved.shape == boxes.shape
    assert torch.equal(render(moved, new_h, new_w), moved_image)
    assert (moved[:, 2] > moved[:, 0]).all() and (moved[:, 3] > moved[:, 1]).all()


@settings(max_examples=50, deadline=None)
@given(image_with_boxes(), st.integers(0, DIHEDRAL - 1))
def test_dihedral_boxes_keep_sizes_and_compose(case: tuple[int, int, torch.Tensor], k: int) -> None:
    h, w, boxes = case
    moved = dihedral_boxes(boxes, k, h, w)
    sizes = torch.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], 1)
    new_sizes = torch.stack([moved[:, 2] - moved[:, 0], moved[:, 3] - moved[:, 1]], 1)
    expected = sizes.flip(1) if k % 2 else sizes
    assert torch.allclose(new_sizes, expected)
    # Four quarter turns, or two flips, give the boxes back.
    turned, th, tw = boxes, h, w
    for _ in range(4):
        turned = dihedral_boxes(turned, 1, th, tw)
        th, tw = tw, th
    assert torch.allclose(turned, boxes)
    flipped = dihedral_boxes(dihedral_boxes(boxes, 4, h, w), 4, h, w)
    assert torch.allclose(flipped, boxes)


def test_clip_boxes_shifts_clips_and_drops_remnants() -> None:
    boxes = np.array(
        [
            [110, 110, 130, 130],  # inside
            [90, 110, 110, 130],  # half visible: kept at 0.4
            [95, 110, 101, 130],  # 1 px sliver: dropped
            [0, 0, 20, 20],  # outside
            [180, 180, 220, 220],  # a quarter visible: dropped at 0.4
        ],
        dtype=float,
    )
    kept, keep = clip_boxes(boxes, 100, 100, 100, 100, min_visible=0.4)
    assert keep.tolist() == [True, True, False, False, False]
    np.testing.assert_allclose(kept, [[10, 10, 30, 30], [0, 10, 10, 30]])
    _, keep_low = clip_boxes(boxes, 100, 100, 100, 100, min_visible=0.2)
    assert keep_low.tolist() == [True, True, False, False, True]
    empty, mask = clip_boxes(np.zeros((0, 4)), 0, 0, 10, 10)
    assert empty.shape == (0, 4) and mask.shape == (0,)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 500), st.floats(0, 500), st.floats(0.5, 80), st.floats(0.5, 80)),
        min_size=1,
        max_size=8,
    ),
    st.floats(-45, 45),
    st.floats(0.05, 30),
)
def test_pixel_to_map_to_pixel_round_trip_through_any_affine(
    raw: list[tuple[float, float, float, float]], angle: float, pixel: float
) -> None:
    boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in raw])
    transform = (
        Affine.translation(500_000, 4_000_000)
        * Affine.rotation(angle)
        * Affine.scale(pixel, -pixel)
    )
    polygons = boxes_to_polygons(boxes, transform)
    back = pixel_bounds(polygons, transform)
    np.testing.assert_allclose(back, boxes, atol=1e-6 * max(1.0, 1 / pixel))


def test_pixel_to_map_to_pixel_round_trip_on_real_scenes() -> None:
    boxes = np.array([[10.0, 20.0, 52.5, 61.0], [300.25, 0.0, 400.0, 35.5], [0, 0, 400, 400]])
    osbs = open_scene(sample_path("neon_osbs"))
    lonlat = boxes_to_map(boxes, osbs)
    assert lonlat.crs.to_epsg() == 4326
    # OSBS lies in Florida: about 29.7 N, 82.0 W.
    assert np.allclose(lonlat.union_all().centroid.coords[0], (-81.99, 29.69), atol=0.02)
    back = pixel_bounds(lonlat.to_crs(osbs.crs).values, osbs.transform)
    np.testing.assert_allclose(back, boxes, atol=1e-3)
    utm = boxes_to_map(boxes, osbs, crs=osbs.crs)
    np.testing.assert_allclose(utm.area.to_numpy(), box_areas_m2(boxes, (0.1, 0.1)), rtol=1e-9)
    yell = open_scene(sample_path("neon_yell"))  # no georeference: pixel space
    pixel = boxes_to_map(boxes, yell)
    assert pixel.crs is None
    np.testing.assert_allclose(pixel.bounds.to_numpy(), boxes)
    np.testing.assert_allclose(pixel_bounds(pixel.values), boxes)


def test_box_areas() -> None:
    boxes = np.array([[0, 0, 40, 20], [5, 5, 6, 6]])
    np.testing.assert_allclose(box_areas_m2(boxes, (0.1, 0.1)), [8.0, 0.01])
    assert np.isnan(box_areas_m2(boxes, None)).all()


@pytest.mark.parametrize("k", range(DIHEDRAL))
def test_dihedral_boxes_on_a_non_square_tile(k: int) -> None:
    boxes = torch.tensor([[1.0, 2.0, 4.0, 3.0], [0.0, 0.0, 7.0, 5.0]])
    image = render(boxes, 5, 7)
    moved = dihedral_boxes(boxes, k, 5, 7)
    assert torch.equal(render(moved, *dihedral(image, k).shape[-2:]), dihedral(image, k))

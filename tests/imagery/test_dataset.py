"""Torch datasets: tiles and chips read, padded, masked and batched correctly."""

from __future__ import annotations

import pickle
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import Window
from torch.utils.data import DataLoader, default_collate

from geoscreen.imagery.chips import Chip
from geoscreen.imagery.dataset import ChipDataset, TileDataset, collate, worker_init_fn
from geoscreen.imagery.preprocess import PreprocessConfig, ScenePreprocessor
from geoscreen.imagery.scene import Scene, open_scene
from geoscreen.imagery.tiling import TileGrid
from geoscreen.samples import make_synthetic_scene

DTYPE_RANGE = PreprocessConfig.model_validate({"normalization": {"method": "dtype_range"}})


def _dataset(path: Path, tile_size: int, config: PreprocessConfig = DTYPE_RANGE) -> TileDataset:
    scene = open_scene(path)
    return TileDataset(TileGrid(scene, tile_size), ScenePreprocessor.build(config, scene))


def _expected(
    scene: Scene, pre: ScenePreprocessor, window: Window
) -> tuple[np.ndarray, np.ndarray]:
    """Preprocessed pixels and mask of an in-scene window, read directly with rasterio."""
    assert pre.read_indexes == tuple(range(1, scene.count + 1))  # GDAL's mask is all bands
    with scene.open() as src:
        raw = src.read(list(pre.read_indexes), window=window)
        valid = src.dataset_mask(window=window) > 0
    return pre.apply(raw, valid), valid


def _batches(dataset: TileDataset, **options: Any) -> list[dict[str, torch.Tensor]]:
    return list(DataLoader(dataset, batch_size=3, shuffle=False, **options))


def test_osbs_tiles_match_direct_reads_and_edges_are_padded(osbs_path: Path) -> None:
    dataset = _dataset(osbs_path, 256)  # 400 x 400 -> 2 x 2 tiles, edges 144 px
    assert len(dataset) == 4
    pre, scene = dataset.reader.preprocessor, dataset.grid.scene
    for i in range(4):
        item, tile = dataset[i], dataset.grid[i]
        assert item["image"].shape == (3, 256, 256) and item["image"].dtype == torch.float32
        assert item["mask"].shape == (256, 256) and item["mask"].dtype == torch.bool
        assert (item["index"], item["row"], item["col"]) == (i, tile.row, tile.col)
        h, w = int(tile.read_window.height), int(tile.read_window.width)
        image, valid = _expected(scene, pre, tile.read_window)
        np.testing.assert_array_equal(item["image"][:, :h, :w].numpy(), image)
        np.testing.assert_array_equal(item["mask"][:h, :w].numpy(), valid)
        assert not item["mask"][h:].any() and not item["mask"][:, w:].any()
        assert (item["image"][:, h:] == 0).all() and (item["image"][:, :, w:] == 0).all()
    corner = dataset[3]
    assert corner["mask"][:144, :144].float().mean() > 0.9
    assert corner["mask"].float().mean() < 0.35


def test_rmnp_nodata_is_masked_and_zeroed(rmnp_path: Path) -> None:
    dataset = _dataset(rmnp_path, 128)
    with rasterio.open(rmnp_path) as src:
        nodata_pixels = (src.read() == 255).all(axis=0)
    seen = 0
    for i in range(len(dataset)):
        item, tile = dataset[i], dataset.grid[i]
        r0, c0 = tile.row * 128, tile.col * 128
        h, w = int(tile.read_window.height), int(tile.read_window.width)
        expected_invalid = nodata_pixels[r0 : r0 + h, c0 : c0 + w]
        np.testing.assert_array_equal(item["mask"][:h, :w].numpy(), ~expected_invalid)
        assert (item["image"][:, ~item["mask"]] == 0).all()
        seen += int(expected_invalid.sum())
    assert seen == nodata_pixels.sum() > 0


def test_sentinel2_ndvi_channel_and_nodata_margin(sentinel2_path: Path) -> None:
    config = PreprocessConfig.model_validate(
        {"bands": ["red", "green", "blue"], "indices": ["ndvi"]}
    )
    dataset = _dataset(sentinel2_path, 64, config)
    item = dataset[0]  # top-left tile: the 12-pixel nodata margin
    assert item["image"].shape == (4, 64, 64)
    assert not item["mask"][:12].any() and not item["mask"][:, :12].any()
    assert item["mask"][12:, 12:].all()
    ndvi = item["image"][3][item["mask"]]
    assert 0 <= float(ndvi.min()) <= float(ndvi.max()) <= 1 and float(ndvi.std()) > 0
    assert (item["image"][:, ~item["mask"]] == 0).all()


def test_reprojected_scene_through_tile_dataset(rmnp_path: Path) -> None:
    scene = open_scene(rmnp_path).reproject("EPSG:3857")
    pre = ScenePreprocessor.build(DTYPE_RANGE, scene)
    dataset = TileDataset(TileGrid(scene, 128), pre)
    masks = []
    for i in range(len(dataset)):
        item, tile = dataset[i], dataset.grid[i]
        h, w = int(tile.read_window.height), int(tile.read_window.width)
        image, valid = _expected(scene, pre, tile.read_window)
        np.testing.assert_array_equal(item["image"][:, :h, :w].numpy(), image)
        np.testing.assert_array_equal(item["mask"][:h, :w].numpy(), valid)
        masks.append(item["mask"])
    share = torch.stack(masks).float().mean()
    assert 0.5 < share < 1  # the warped footprint leaves invalid corners and edges


def test_reprojected_scene_without_nodata_uses_alpha_mask(
    make_scene: Callable[..., Path],
) -> None:
    scene = open_scene(make_scene(90, 70, crs="EPSG:32633")).reproject("EPSG:4326")
    assert scene.nodata is None and scene.mask_kind == "mask"
    pre = ScenePreprocessor.build(PreprocessConfig(), scene)
    dataset = TileDataset(TileGrid(scene, 64), pre)
    for i in range(len(dataset)):
        item, tile = dataset[i], dataset.grid[i]
        h, w = int(tile.read_window.height), int(tile.read_window.width)
        image, valid = _expected(scene, pre, tile.read_window)
        np.testing.assert_array_equal(item["image"][:, :h, :w].numpy(), image)
        np.testing.assert_array_equal(item["mask"][:h, :w].numpy(), valid)
    assert not dataset[0]["mask"].all()  # rotated footprint: invalid corners


def test_dataloader_workers_give_identical_batches(osbs_path: Path) -> None:
    dataset = _dataset(osbs_path, 160)  # 3 x 3 tiles, edge tiles padded
    single = _batches(dataset, collate_fn=collate)
    dataset[0]  # the parent holds an open handle when the workers fork
    parallel = _batches(dataset, collate_fn=collate, num_workers=2, worker_init_fn=worker_init_fn)
    default = _batches(dataset, num_workers=2)  # the stock default_collate path
    assert len(single) == len(parallel) == len(default) == 3
    for a, b, c in zip(single, parallel, default, strict=True):
        assert a.keys() == b.keys() == c.keys() == {"image", "mask", "index", "row", "col"}
        for key in a:
            assert a[key].dtype == b[key].dtype == c[key].dtype
            assert torch.equal(a[key], b[key]) and torch.equal(a[key], c[key])


def test_read_threads_and_layouts_give_identical_batches(tmp_path: Path) -> None:
    # 64 px blocks, 48 px tiles: tiles straddle block columns; the edge tiles are padded.
    path = make_synthetic_scene(tmp_path / "blocks.tif", 300, 200, blocksize=64, seed=3)
    scene = open_scene(path)
    pre = ScenePreprocessor.build(DTYPE_RANGE, scene)
    grid = TileGrid(scene, 48)
    one = TileDataset(grid, pre, channels_last=False)
    three = TileDataset(grid, pre, read_threads=3)
    everything = list(range(len(grid)))
    a, b = collate(one.__getitems__(everything)), collate(three.__getitems__(everything))
    assert a["image"].is_contiguous()
    assert b["image"].is_contiguous(memory_format=torch.channels_last)
    for key in a:
        assert torch.equal(a[key], b[key])
    # Each thread reads its own block columns through its own handle.
    assert all(reader._handle is not None for reader in three.readers)
    threads = {t.name for t in threading.enumerate() if t.name.startswith("geoscreen-tiles")}
    assert 1 <= len(threads) <= 3
    copy = pickle.loads(pickle.dumps(three))  # a DataLoader worker gets no threads, no handles
    assert copy._pool is None and all(r._handle is None for r in copy.readers)
    assert torch.equal(collate(copy.__getitems__(everything))["image"], a["image"])
    for dataset in (one, three, copy):
        dataset.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("geoscreen-tiles")]
    with pytest.raises(ValueError, match="read_threads"):
        TileDataset(grid, pre, read_threads=0)


def test_collate_matches_default_collate(osbs_path: Path) -> None:
    dataset = _dataset(osbs_path, 256)
    batch = dataset.__getitems__([3, 0, 2])
    fast, stock = collate(batch), default_collate(list(batch))
    assert fast["index"].tolist() == [3, 0, 2]
    for key in stock:
        assert torch.equal(fast[key], stock[key])
    plain = collate([dataset[1], dataset[2]])  # individually read samples
    assert plain["image"].shape == (2, 3, 256, 256)


def test_dataset_pickles_without_handle_and_reopens(osbs_path: Path) -> None:
    dataset = _dataset(osbs_path, 256)
    first = dataset[1]["image"]
    copy = pickle.loads(pickle.dumps(dataset))
    assert copy.reader._handle is None
    assert torch.equal(copy[1]["image"], first)
    dataset.close()
    assert dataset.reader._handle is None
    assert torch.equal(dataset[1]["image"], first)  # reopened on demand
    dataset.close()
    copy.close()


def test_chip_dataset_labels_padding_and_augment(osbs_path: Path) -> None:
    scene = open_scene(osbs_path)
    pre = ScenePreprocessor.build(DTYPE_RANGE, scene)
    chips = [
        Chip(row_off=10, col_off=20, size=64, label=1, source="positive"),
        Chip(row_off=360, col_off=380, size=64, label=0, source="background"),  # past the edge
    ]

    def flip(sample: dict[str, Any]) -> dict[str, Any]:
        return {**sample, "image": sample["image"].flip(-1), "mask": sample["mask"].flip(-1)}

    plain = ChipDataset(scene, chips, pre)
    flipped = ChipDataset(scene, chips, pre, augment=flip)
    assert len(plain) == 2
    first = plain[0]
    assert first["label"] == 1 and first["image"].shape == (3, 64, 64)
    image, valid = _expected(scene, pre, Window(20, 10, 64, 64))
    np.testing.assert_array_equal(first["image"].numpy(), image)
    np.testing.assert_array_equal(first["mask"].numpy(), valid)
    assert torch.equal(flipped[0]["image"], first["image"].flip(-1))
    edge = plain[1]
    assert edge["label"] == 0
    assert edge["mask"][:40, :20].float().mean() > 0.9 and not edge["mask"][40:].any()
    assert not edge["mask"][:, 20:].any() and (edge["image"][:, :, 20:] == 0).all()
    batch = next(iter(DataLoader(plain, batch_size=2)))
    assert batch["image"].shape == (2, 3, 64, 64) and batch["label"].tolist() == [1, 0]
    plain.close()


def test_window_outside_scene_reads_nothing(osbs_path: Path) -> None:
    scene = open_scene(osbs_path)
    chip = Chip(row_off=500, col_off=500, size=32, label=0, source="background")
    item = ChipDataset(scene, [chip], ScenePreprocessor.build(DTYPE_RANGE, scene))[0]
    assert not item["mask"].any() and (item["image"] == 0).all()


@pytest.mark.parametrize("tile_size", [96, 400, 512])
def test_every_tile_has_full_size(rmnp_path: Path, tile_size: int) -> None:
    dataset = _dataset(rmnp_path, tile_size)
    shapes = {tuple(dataset[i]["image"].shape) for i in range(len(dataset))}
    assert shapes == {(3, tile_size, tile_size)}

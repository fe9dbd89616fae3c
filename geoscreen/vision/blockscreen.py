"""Block screening: many tiles per read, for models whose cost per tile is tiny.

A feature scorer on spectral-context statistics (:mod:`geoscreen.vision.tilefeatures`)
computes a 16 px tile's features in tens of microseconds; reading that tile through
its own window, then stacking batches of 32, cost more than the model (a trained
``spectral_gbm`` screened 635 tiles/s). Here the scene is read in blocks of many
tiles, aligned to the tile grid (overlap included): each block is read and
preprocessed once, its tiles are cut out as strided views (no per-tile Python) and
scored in large batches.

It gives the scores of the general path (:func:`geoscreen.vision.infer.score_grid`):
the same reads, clipped and zero-padded at the scene edges, the same per-pixel
preprocessing and valid masks, the same model on the same tile layout
(``channels_last``). :func:`block_path_applies` says when it is used: a feature
scorer without deep features, on a scene read without reprojection (a warped read
may resample a pixel differently in a different window).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from rasterio.windows import Window
from tqdm import tqdm

from geoscreen.imagery.dataset import SceneWindowReader
from geoscreen.imagery.preprocess import ScenePreprocessor
from geoscreen.imagery.tiling import TileGrid
from geoscreen.vision.classifier import TileModel
from geoscreen.vision.scorer import FeatureScorer

# Pixels per block read (about 4 MiB per float32 channel): a few tens of MiB of
# preprocessed block for a 13-band scene, whatever the scene size.
BLOCK_PX = 1 << 20
# Tiles per model call: large enough that per-call overhead vanishes, small enough
# that the features' intermediates stay a few tens of MiB (16 px, 13 channels: 27 MiB).
BATCH_TILES = 2048


def block_path_applies(model: TileModel, grid: TileGrid) -> bool:
    """Whether :func:`score_blocks` screens ``model`` on ``grid`` (else the general path):
    a feature scorer on spectral features only, and a scene read without warping."""
    return (
        isinstance(model, FeatureScorer)
        and model.deep is None
        and model.spectral is not None
        and grid.scene.warp is None
    )


@dataclass(frozen=True)
class Block:
    """The selected tiles (positions in the grid's selection) of one block of the tile
    grid, and the window covering them (may reach past the scene edge)."""

    members: np.ndarray
    row0: int
    col0: int
    rows: int
    cols: int
    window: Window


def block_tiles(grid: TileGrid, block_px: int = BLOCK_PX) -> tuple[int, int]:
    """Tile rows and columns per block: about the file's block height (each file block
    is then decompressed about once), as wide as ``block_px`` allows."""
    stride = grid.stride
    height = max(grid.scene.block_shape[0], grid.tile_size)
    rows = max(1, min(grid.n_rows, round(height / stride)))
    cols = max(1, min(grid.n_cols, block_px // (rows * stride * stride)))
    return rows, cols


def grid_blocks(grid: TileGrid, block_px: int = BLOCK_PX) -> Iterator[Block]:
    """The blocks holding selected tiles, in row-major order; each block's window is
    the bounding box of its selected tiles only (an AOI's corner reads no more)."""
    if len(grid) == 0:
        return
    per_rows, per_cols = block_tiles(grid, block_px)
    rows, cols = grid.rows, grid.cols
    n_block_cols = -(-grid.n_cols // per_cols)
    key = (rows // per_rows) * n_block_cols + cols // per_cols
    order = np.argsort(key, kind="stable")
    bounds = np.flatnonzero(np.diff(key[order])) + 1
    size, stride = grid.tile_size, grid.stride
    for members in np.split(order, bounds):
        r0, r1 = int(rows[members].min()), int(rows[members].max())
        c0, c1 = int(cols[members].min()), int(cols[members].max())
        height = (r1 - r0) * stride + size
        width = (c1 - c0) * stride + size
        window = Window(c0 * stride, r0 * stride, width, height)
        yield Block(members, r0, c0, r1 - r0 + 1, c1 - c0 + 1, window)


@torch.inference_mode()
def score_blocks(
    model: TileModel,
    grid: TileGrid,
    preprocessor: ScenePreprocessor,
    device: torch.device,
    *,
    embeddings: bool = False,
    progress: bool = False,
    block_px: int = BLOCK_PX,
    batch_tiles: int = BATCH_TILES,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Scores, valid fractions and (with ``embeddings``) float16 embeddings of every
    tile of ``grid``, in grid order, read block by block (see module doc)."""
    n = len(grid)
    scores = np.zeros(n, dtype=np.float32)
    valid = np.zeros(n, dtype=np.float32)
    embedded: np.ndarray | None = None
    size, stride = grid.tile_size, grid.stride
    channels = preprocessor.out_channels
    grid_rows, grid_cols = grid.rows, grid.cols  # computed per call: once here
    reader = SceneWindowReader(grid.scene, preprocessor)
    try:
        with (
            reader.session() as src,
            tqdm(total=n, desc="screening", unit="tile", disable=not progress) as bar,
        ):
            for block in grid_blocks(grid, block_px):
                height, width = int(block.window.height), int(block.window.width)
                # Pixel-interleaved, so that a tile cut out of it is channels_last.
                image = np.empty((height, width, channels), dtype=np.float32)
                mask = np.empty((height, width), dtype=bool)
                reader.read_into(src, block.window, image.transpose(2, 0, 1), mask)
                tiles = _tile_view(torch.from_numpy(image), block, size, stride)
                masks = _tile_view(torch.from_numpy(mask)[..., None], block, size, stride)
                local_r = grid_rows[block.members] - block.row0
                local_c = grid_cols[block.members] - block.col0
                for start in range(0, block.members.size, batch_tiles):
                    part = slice(start, start + batch_tiles)
                    index = block.members[part]
                    rr = torch.from_numpy(local_r[part])
                    cc = torch.from_numpy(local_c[part])
                    batch = tiles[rr, cc].permute(0, 3, 1, 2).to(device)  # (B, C, T, T)
                    if embeddings:
                        prob, feats = model.score_and_embed(batch)
                        if embedded is None:
                            embedded = np.zeros((n, feats.shape[1]), dtype=np.float16)
                        embedded[index] = feats.float().cpu().numpy().astype(np.float16)
                    else:  # the per-pixel learner then reads the centre pixels alone
                        prob = model.score(batch)
                    scores[index] = prob.float().cpu().numpy()
                    flat = masks[rr, cc].reshape(index.size, -1).numpy()
                    valid[index] = np.count_nonzero(flat, axis=1) / flat.shape[1]
                    bar.update(index.size)
    finally:
        reader.close()
    return scores, valid, embedded


def _tile_view(pixels: torch.Tensor, block: Block, size: int, stride: int) -> torch.Tensor:
    """``(H, W, C)`` block -> ``(rows, cols, T, T, C)`` view of its tiles (no copy)."""
    row_step, col_step, chan_step = pixels.stride()
    return pixels.as_strided(
        (block.rows, block.cols, size, size, pixels.shape[2]),
        (stride * row_step, stride * col_step, row_step, col_step, chan_step),
    )

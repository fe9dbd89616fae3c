"""Augmentations: the 8 symmetries of the square, aligned masks, jitter on valid pixels only."""

from __future__ import annotations

import itertools

import pytest
import torch

from geoscreen.vision.augment import DIHEDRAL, dihedral, jitter, random_dihedral


def inverse(k: int) -> int:
    """Inverse element: rotations undo by the opposite rotation, reflections are their own."""
    return (4 - k) % 4 if k < 4 else k


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    """(2, 3, 5, 5) with no symmetry (all values distinct)."""
    return torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).reshape(2, 3, 5, 5)


def test_eight_distinct_symmetries(batch: torch.Tensor) -> None:
    views = [dihedral(batch, k) for k in range(DIHEDRAL)]
    assert DIHEDRAL == 8
    for a, b in itertools.combinations(range(DIHEDRAL), 2):
        assert not torch.equal(views[a], views[b]), (a, b)
    assert torch.equal(views[0], batch)
    for view in views:  # a permutation of pixels within each channel
        assert torch.equal(view.flatten(2).sort().values, batch.flatten(2).sort().values)


def test_group_closure_and_inverses(batch: torch.Tensor) -> None:
    views = [dihedral(batch, k) for k in range(DIHEDRAL)]
    for k in range(DIHEDRAL):
        assert torch.equal(dihedral(dihedral(batch, k), inverse(k)), batch), k
        for j in range(DIHEDRAL):
            composed = dihedral(dihedral(batch, k), j)
            assert any(torch.equal(composed, v) for v in views), (k, j)


def test_dihedral_is_spatial_only_and_known() -> None:
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert torch.equal(dihedral(x, 1), torch.rot90(x, 1))
    assert torch.equal(dihedral(x, 4), torch.flip(x, dims=(-1,)))
    channels = torch.stack([x, 10 * x])
    # Channels move together.
    assert torch.equal(dihedral(channels, 3)[1], 10 * dihedral(channels, 3)[0])


def test_random_dihedral_keeps_image_and_mask_aligned() -> None:
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(64, 3, 8, 8, generator=gen)
    mask = image[:, 0] > 0.5
    out_image, out_mask = random_dihedral(image, mask, gen)
    assert out_image.shape == image.shape and out_mask.shape == mask.shape
    assert out_mask.dtype == torch.bool
    assert torch.equal(out_mask, out_image[:, 0] > 0.5)
    # Each sample got one of the 8 symmetries, and not all the same one.
    used = set()
    for i in range(len(image)):
        ks = [k for k in range(DIHEDRAL) if torch.equal(dihedral(image[i], k), out_image[i])]
        assert len(ks) == 1
        used.add(ks[0])
    assert len(used) > 4


def test_random_dihedral_is_seeded() -> None:
    image = torch.rand(16, 2, 6, 6)
    mask = torch.ones(16, 6, 6, dtype=torch.bool)
    a = random_dihedral(image, mask, torch.Generator().manual_seed(7))[0]
    b = random_dihedral(image, mask, torch.Generator().manual_seed(7))[0]
    assert torch.equal(a, b)


def test_jitter_leaves_invalid_pixels_at_zero() -> None:
    gen = torch.Generator().manual_seed(1)
    image = torch.rand(8, 3, 16, 16, generator=gen) * 0.5 + 0.25
    mask = torch.ones(8, 16, 16, dtype=torch.bool)
    mask[:, :5, :] = False
    mask[3] = False  # a sample with nothing valid
    out = jitter(image, mask, gen, brightness=0.2, contrast=0.3)
    assert out.shape == image.shape
    assert torch.all(out[:, :, :5, :] == 0)
    assert torch.all(out[3] == 0)
    assert torch.isfinite(out).all()
    valid = out[:, :, 5:, :][torch.arange(8) != 3]
    assert not torch.allclose(valid, image[:, :, 5:, :][torch.arange(8) != 3])


def test_jitter_bounds() -> None:
    """Brightness shifts the valid mean by at most ``brightness``; contrast scales deviations."""
    gen = torch.Generator().manual_seed(2)
    image = torch.rand(32, 1, 8, 8, generator=gen)
    mask = torch.ones(32, 8, 8, dtype=torch.bool)
    out = jitter(image, mask, gen, brightness=0.1, contrast=0.15)
    shift = out.mean(dim=(1, 2, 3)) - image.mean(dim=(1, 2, 3))
    assert shift.abs().max() <= 0.1 + 1e-6
    ratio = out.std(dim=(1, 2, 3)) / image.std(dim=(1, 2, 3))
    assert ratio.min() >= 0.85 - 1e-5 and ratio.max() <= 1.15 + 1e-5
    assert torch.allclose(jitter(image, mask, gen, brightness=0.0, contrast=0.0), image, atol=1e-6)

"""Augmentations for overhead imagery: it has no "up", so all 8 flips/rotations are fair.

All functions work on batches (B, C, H, W) and keep the valid mask (B, H, W) aligned.
"""

from __future__ import annotations

import torch

DIHEDRAL = 8


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th (0..7) of the 8 symmetries of the square on the last two dims."""
    out = torch.rot90(x, k % 4, dims=(-2, -1))
    return torch.flip(out, dims=(-1,)) if k >= 4 else out


def random_dihedral(
    x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """One random symmetry per sample, applied to image and mask alike."""
    ks = torch.randint(0, DIHEDRAL, (x.shape[0],), generator=generator)
    xs = [dihedral(x[i], int(k)) for i, k in enumerate(ks)]
    ms = [dihedral(mask[i], int(k)) for i, k in enumerate(ks)]
    return torch.stack(xs), torch.stack(ms)


def jitter(
    x: torch.Tensor,
    mask: torch.Tensor,
    generator: torch.Generator,
    brightness: float = 0.1,
    contrast: float = 0.15,
    gain: float = 0.0,
) -> torch.Tensor:
    """Per-sample brightness shift and contrast scale on valid pixels (inputs in ~[0, 1]);
    with ``gain``, each channel is also scaled by its own factor in [1 - gain, 1 + gain]
    (another sensor's or another day's colour balance)."""
    b = x.shape[0]
    shift = (torch.rand(b, 1, 1, 1, generator=generator) * 2 - 1) * brightness
    scale = 1 + (torch.rand(b, 1, 1, 1, generator=generator) * 2 - 1) * contrast
    valid = mask.unsqueeze(1).to(x.dtype)
    count = valid.sum(dim=(2, 3), keepdim=True).clamp(min=1)
    mean = (x * valid).sum(dim=(2, 3), keepdim=True) / count
    out = (x - mean) * scale + mean + shift
    if gain:
        out = out * (1 + (torch.rand(b, x.shape[1], 1, 1, generator=generator) * 2 - 1) * gain)
    return out * valid

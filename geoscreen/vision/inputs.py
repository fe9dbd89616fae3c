"""What a model reads from a scene under a profile: channel roles, backbone, pixel size.

Shared by training and inference: a model is trained and applied on the same channels
and the same pixel size, so both sides derive them here (inference never imports
the training modules).
"""

from __future__ import annotations

import math

from geoscreen.errors import ConfigError
from geoscreen.imagery.scene import Scene
from geoscreen.profiles import Profile
from geoscreen.vision.backbones import BackboneSpec


def band_roles(profile: Profile, scene: Scene) -> tuple[str | None, ...]:
    """Common name of each model input channel (bands in order, then derived indices)."""
    indexes = scene.band_indexes(profile.preprocess.bands)
    roles: list[str | None] = [scene.common_name(i) for i in indexes]
    return (*roles, *([None] * len(profile.preprocess.indices)))


def backbone_spec(profile: Profile, scene: Scene) -> BackboneSpec:
    """The backbone for a profile, adapted to the bands of ``scene``."""
    roles = band_roles(profile, scene)
    weights = profile.model.weights
    if weights and not weights.startswith("package:"):
        weights = str(profile.resolve_path(weights))
    return BackboneSpec(
        name=profile.model.backbone,
        in_channels=len(roles),
        band_roles=roles,
        weights=weights,
        weights_sha256=profile.model.weights_sha256,
    )


def scene_resolution_m(profile: Profile, scene: Scene, given: float | None = None) -> float:
    """Pixel size in metres: the scene's own, else ``given``, else the profile's nominal one.

    Images without georeference take the geometric mean of ``imagery.resolution_m``.
    """
    res = scene.resolution_m
    if res is not None:
        return math.sqrt(res[0] * res[1])
    if given is not None:
        return given
    if profile.imagery.resolution_m is not None:
        low, high = profile.imagery.resolution_m
        return math.sqrt(low * high)
    raise ConfigError(
        "the image has no georeference, so its pixel size (needed for the object size "
        "in pixels) is unknown",
        where=scene.uri,
        fix="Set imagery.resolution_m in the profile, or give the pixel size in metres.",
    )

"""A similarity search kept as a model, so that a profile defined by examples screens
in batch.

``geoscreen similar --save-model DIR --threshold T`` writes the examples' embeddings,
the spectral block's reference statistics and the backbone into a model directory
(:mod:`geoscreen.vision.modeldir`); ``screen`` and ``scan`` load it as they load a
trained classifier, so tiles like the examples reach the review store. Its scores are
cosine similarities (-1..1), not probabilities: the card's threshold, the analyst's, is
in force, never the profile's (a probability, on another scale).

Nothing is fitted and there are no negatives, so there is no precision to measure. The
card says what the threshold means on what there is: how many examples score at least
it, each scored as a tile against the examples two tile widths or more away
(:func:`blocked_leave_one_out`), and what share of random tiles of the examples' scenes
does, about the share of a scene's tiles a review would hold. Both describe the
examples' scene: similarities run lower elsewhere (:func:`scene_comparison`).
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geoscreen.imagery.region import region_record
from geoscreen.profiles import Profile
from geoscreen.vision.backbones import build_backbone
from geoscreen.vision.cards import backbone_record, data_lines, limits_lines, model_card
from geoscreen.vision.classifier import LoadedModel, spec_from_card
from geoscreen.vision.embeddings import (
    REFERENCE_TILES,
    ExampleSet,
    SimilarityFeatures,
    SimilarityModel,
    best_cosine,
    raw_features,
    reference_chips,
)
from geoscreen.vision.inputs import backbone_spec
from geoscreen.vision.modelcard import ClassifyCard, ModelCard
from geoscreen.vision.modeldir import save_model_dir
from geoscreen.vision.scorer import DeepFeatures, required_field
from geoscreen.vision.tilefeatures import SpectralContext

KIND = "similarity"
# A left-out example is compared with examples at least this many tile widths away.
BLOCK_TILES = 2
# Where the threshold in force comes from (screen and scan say it; screen.json records it).
THRESHOLD_SOURCE = "model card: the analyst's threshold for the similarity search"
LIMITS = (
    "A tile scores its highest cosine similarity (-1..1) to any example: likeness to what "
    "the analyst marked, not a probability and not a finding about any place or person.",
    "Nothing was fitted and no negatives were given: precision is unknown until reviewers "
    "have judged what the threshold flags. The metrics say how many examples (each scored "
    "as a tile, its neighbours left out with it) and what share of random tiles of the "
    "examples' scenes score at least it.",
    "Examples from few places make the left-out count optimistic: neighbours within two "
    "tile widths are left out with each example, not the rest of a lake or a field.",
    "Imagery unlike the examples' scenes (another sensor, season, place or pixel size) "
    "changes what scores high; screen and scan warn far from the examples' region.",
    "A threshold set on the examples' scene need not suit another: examples on one NEON "
    "site ranked another site's crown tiles at AP 0.77, yet at the threshold the examples "
    "suggested flagged 0.5-2% of them (README, similarity search). 'screen' prints "
    "each scene's scores beside the examples' scene's.",
)


def learner_record(features: SimilarityFeatures, tile_size: int) -> dict[str, Any]:
    """The card's ``learner`` section: enough to rebuild ``features`` around the weights."""
    deep, spectral = features.deep, features.spectral
    if spectral is not None:
        channels = spectral.channels
    else:
        assert deep is not None
        channels = deep.norm.mean.numel()
    uses = "combined" if deep and spectral else "deep" if deep else "spectral"
    record: dict[str, Any] = {
        "kind": KIND,
        "name": KIND,
        "features": uses,
        "estimator": "highest cosine similarity to an example",
        "channels": channels,
        "tile_size": tile_size,
        "calibration": "none",
    }
    if deep is not None:
        record |= {"deep_min_size": deep.min_size, "deep_views": deep.views,
                   "deep_stages": deep.stages}  # fmt: skip
    if spectral is not None:
        record["relative_channels"] = spectral.relative
    return record


def model_from_card(card: ClassifyCard, state: dict[str, torch.Tensor]) -> SimilarityModel:
    """Rebuild the similarity model a card's ``learner`` section describes, shaped like
    ``state`` (whose weights the caller restores)."""
    learner = card.learner
    assert learner is not None and learner.kind == KIND
    deep = None
    if learner.features in ("deep", "combined"):
        min_size = required_field(learner.deep_min_size, "deep_min_size")
        deep = DeepFeatures(
            build_backbone(spec_from_card(card)), card.input_stats.mean, card.input_stats.std,
            min_size, learner.deep_views or 1, learner.deep_stages,
        )  # fmt: skip
    spectral = None
    if learner.features in ("spectral", "combined"):
        spectral = SpectralContext(learner.channels, learner.tile_size, learner.relative_channels)
    features = SimilarityFeatures(deep, spectral)
    width = (deep.out_features if deep else 0) + (spectral.out_features if spectral else 0)
    # restore_weights refuses a state of another shape, with the card named
    examples = state.get("examples", torch.zeros(1, width))
    return SimilarityModel(features, torch.ones_like(examples))


def leave_one_out(
    examples: np.ndarray,
    as_tiles: np.ndarray | None = None,
    places: np.ndarray | None = None,
    min_distance: float = 0.0,
) -> np.ndarray:
    """Each example's highest cosine similarity to the other examples (K,); NaN where
    none is left to compare with.

    ``as_tiles`` (K, F): each example embedded as a screened tile is (one view), scored
    against the others' embeddings (8 views averaged), as a tile like it would score.
    Averaged views are smoother and more alike than single tiles: compared with each
    other they overstate how examples score (eleven OSBS crowns: median 0.913 against 0.858).
    ``places`` (K x 3: scene index, column, row) with ``min_distance`` (pixels): others
    closer than that in the same scene are left out too, as spatially blocked folds do.
    """
    e = _unit(examples)
    t = e if as_tiles is None else _unit(as_tiles)
    sims = (t @ e.T).numpy().astype(np.float64)
    apart = ~np.eye(len(e), dtype=bool)
    if places is not None and min_distance > 0:
        same = places[:, None, 0] == places[None, :, 0]
        gap = np.hypot(
            places[:, None, 1] - places[None, :, 1], places[:, None, 2] - places[None, :, 2]
        )
        apart &= ~same | (gap >= min_distance)
    best = np.where(apart, sims, -np.inf).max(axis=1, initial=-np.inf)
    return np.where(np.isfinite(best), best, np.nan)


def _unit(rows: np.ndarray) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.from_numpy(rows).float(), dim=1)


def blocked_leave_one_out(examples: ExampleSet, tile_size: int) -> np.ndarray:
    """:func:`leave_one_out` of ``examples`` as tiles, leaving out with each example the
    others within :data:`BLOCK_TILES` tile widths of it: near ones share pixels or the
    same small place (four water points of one lake scored 0.97-0.99 against each other,
    0.88-0.91 against the other lakes' points)."""
    return leave_one_out(examples.embeddings, examples.as_tiles, examples.places,
                         BLOCK_TILES * tile_size)  # fmt: skip


def threshold_metrics(
    model: SimilarityModel,
    profile: Profile,
    examples: ExampleSet,
    threshold: float,
    reference_tiles: int = REFERENCE_TILES,
) -> dict[str, float]:
    """What ``threshold`` means: examples (each left out) and random tiles of the
    examples' scenes (``reference_tiles`` of each, seeded) at or above it."""
    left_out = blocked_leave_one_out(examples, profile.tiling.tile_size)
    scores = []
    for scene in examples.scenes:
        chips = reference_chips(profile, scene, reference_tiles)
        raw = raw_features(model.embed, profile, scene, chips, views=1)
        scores.append(best_cosine(model.embed.standardise(raw), model.examples).numpy())
    tiles = np.concatenate(scores)
    metrics = {
        "examples": float(len(left_out)),
        "reference_tiles": float(tiles.size),
        "reference_share_at_threshold": float(np.mean(tiles >= threshold)),
        "reference_score_top_1pct": float(np.quantile(tiles, 0.99)),
    }
    compared = left_out[np.isfinite(left_out)]
    if compared.size:
        metrics["examples_left_out"] = float(compared.size)
        metrics["examples_at_threshold_left_out"] = float(np.mean(compared >= threshold))
        metrics["example_score_left_out_median"] = float(np.median(compared))
    return metrics


def similarity_card(
    profile: Profile,
    model: SimilarityModel,
    examples: ExampleSet,
    *,
    threshold: float,
    metrics: dict[str, float],
    backbone: dict[str, Any] | None,
    options: dict[str, Any],
    device: torch.device,
    seconds: float,
) -> ClassifyCard:
    """The card of a saved similarity search (``backbone``: the record of the backbone
    the deep block runs, None without one)."""
    deep = model.embed.deep
    stats = (
        (deep.norm.mean.flatten().tolist(), deep.norm.std.flatten().tolist()) if deep else ([], [])
    )
    card = model_card(
        profile,
        task="classify",
        output_meaning=f"highest cosine similarity (-1..1) of a tile to the examples of "
        f"screening profile '{profile.name}'; not a probability",
        spec=None,
        stats=stats,
        data=examples,
        split={},
        metrics={k: round(v, 4) for k, v in metrics.items()},
        training={
            "mode": KIND,
            "device": str(device),
            "seconds": round(seconds, 2),
            "options": options,
            "torch": str(torch.__version__),
            "python": platform.python_version(),
        },
        limits=LIMITS,
        model={"learner": learner_record(model.embed, profile.tiling.tile_size)},
    )
    card |= {
        "backbone": backbone,
        "split": None,
        "threshold": threshold,
        "threshold_source": THRESHOLD_SOURCE,
        "thresholds": {"in_force": threshold, "source": "analyst (geoscreen similar --threshold)"},
        "region": region_record(examples.scenes),  # screen/scan warn far from it
    }
    return ClassifyCard.model_validate(card)


def save_similarity_model(model: SimilarityModel, card: ClassifyCard, out_dir: str | Path) -> str:
    """Write the model directory; returns the model hash."""
    return str(save_model_dir(model, card, out_dir, render_similarity_card).model_sha256)


def keep_search(
    model: SimilarityModel,
    profile: Profile,
    examples: ExampleSet,
    threshold: float,
    out_dir: str | Path,
    device: torch.device,
    *,
    source: LoadedModel | None = None,
    options: dict[str, Any] | None = None,
    started: float | None = None,
) -> str:
    """Measure what ``threshold`` means, write the card and weights; returns the hash.

    ``source``: the trained model whose features the search compares (its backbone
    record is kept), None for the profile's pretrained backbone."""
    metrics = threshold_metrics(model, profile, examples, threshold)
    backbone = None
    if model.embed.deep is not None and source is not None:
        assert source.card.backbone is not None  # a trained model's deep features
        backbone = source.card.backbone.model_dump(mode="json")
    elif model.embed.deep is not None:
        backbone = backbone_record(backbone_spec(profile, examples.scenes[0]))
    recorded = {**(options or {}), "reference_tiles": REFERENCE_TILES}
    if source is not None:
        recorded["model"] = {"path": str(source.path), "model_sha256": source.sha256}
    seconds = time.perf_counter() - started if started is not None else 0.0
    card = similarity_card(profile, model, examples, threshold=threshold, metrics=metrics,
                           backbone=backbone, options=recorded, device=device,
                           seconds=seconds)  # fmt: skip
    return save_similarity_model(model, card, out_dir)


def scene_comparison(card: ModelCard, scores: np.ndarray) -> str | None:
    """How a screened scene's similarities compare with the examples' scene's random
    tiles (the card's metrics), at the card's threshold: a threshold set on one scene
    need not suit another. Information, not a warning: a scene may hold few such places.
    None for any other model."""
    if not isinstance(card, ClassifyCard) or not card.similarity or card.threshold is None:
        return None
    m = card.metrics
    needed = ("reference_share_at_threshold", "reference_score_top_1pct")
    if scores.size == 0 or any(k not in m for k in needed):
        return None
    share = float(np.mean(scores >= card.threshold))
    top = float(np.quantile(scores, 0.99))
    return (
        f"{share:.1%} of tiles score at least {card.threshold:g} and the top 1% "
        f"{top:.3f} or more (random tiles of the examples' scene: "
        f"{m['reference_share_at_threshold']:.1%}, {m['reference_score_top_1pct']:.3f}); "
        "similarities run lower on other sites and sensors even where the ranking holds"
    )


def render_similarity_card(card: ClassifyCard) -> str:
    """MODEL_CARD.md of a saved similarity search."""
    learner, m = card.learner, card.metrics
    assert learner is not None
    blocks = {
        "deep": "the backbone's pooled features",
        "spectral": "spectral-context statistics of every band, standardised by random "
        "tiles of the examples' scene",
    }
    uses = list(blocks) if learner.features == "combined" else [learner.features]
    backbone = card.backbone
    lines = [
        f"# Model card: {card.profile.name} v{card.profile.version} (similarity search)",
        "",
        f"Output meaning: {card.output_meaning}. It ranks tiles for human reviewers; a high "
        "score is not a finding about any place or person.",
        "",
        "## Model",
        f"- profile fingerprint: `{card.profile.fingerprint or '?'}`",
        f"- features: {'; '.join(blocks[u] for u in uses)}",
    ]
    source = card.training.options.get("model") if card.training else None
    if isinstance(source, dict):  # similar --model: a trained model's features
        lines.append(f"- features as the trained model `{source.get('path')}` computes them "
                     f"(sha256 `{source.get('model_sha256')}`)")  # fmt: skip
    elif backbone is not None:
        lines.append(f"- backbone: `{backbone.name}`, {backbone.in_channels} input channels, "
                     f"pretrained weights: `{backbone.weights or 'none'}`")  # fmt: skip
    lines += [
        f"- examples: {m.get('examples', 0):.0f}, each the mean of its 8 flips/rotations",
        f"- threshold in force: {card.threshold} (the analyst's; the profile's threshold, a "
        "probability, does not apply)",
        f"- model sha256: `{card.model_sha256 or '?'}`",
        *data_lines(card),
        "",
        "## What the threshold means",
    ]
    if "examples_at_threshold_left_out" in m:
        lines.append(
            f"- examples scoring at least {card.threshold} against the others, each as one "
            f"tile and left out with those within {BLOCK_TILES} tile widths: "
            f"{m['examples_at_threshold_left_out']:.0%} of {m['examples_left_out']:.0f} (median "
            f"score {m['example_score_left_out_median']:.3f})"
        )
    lines.append(
        f"- random tiles of the examples' scenes scoring at least it: "
        f"{m.get('reference_share_at_threshold', float('nan')):.1%} of "
        f"{m.get('reference_tiles', 0):.0f} (their top 1% score "
        f"{m.get('reference_score_top_1pct', float('nan')):.3f} or more)"
    )
    lines += limits_lines(card)
    return "\n".join(lines) + "\n"

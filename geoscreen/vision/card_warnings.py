"""Warnings a model carries from its training into every screening with it.

``train`` compares each model with simple baselines on held-out data and says so when it
does not beat them; the card keeps the comparison. This reads it back for ``screen`` and
``scan``, which print it and keep it with each run in the review store, so that the
analyst who screens with a colleague's model and the reviewer of its queue see it too.
Inference side: the card only, nothing that fits models.
"""

from __future__ import annotations

from geoscreen.vision.modelcard import SIMPLE_BASELINES, CardBase, ClassifyCard, DetectCard


def baseline_warnings(card: CardBase) -> list[str]:
    """One line when the model did not beat its simple baselines in training (empty
    when it did, or when the card predates the comparison). A classifier that is the
    per-pixel baseline itself (kept because nothing beat it) gets none: it is what the
    comparison recommends."""
    selection = card.selection if isinstance(card, ClassifyCard) else None
    if selection is not None and not selection.beats_pixel_baseline:
        pixel = next((s for s in selection.learners.values() if s.baseline), None)
        chosen = selection.learners.get(selection.chosen)
        if pixel is None or chosen is None or chosen.baseline:
            return []
        return [
            f"the model ({selection.chosen}) did not beat the per-pixel baseline by a clear "
            f"margin when it was trained (out-of-fold AP {chosen.ap:.3f} against "
            f"{pixel.ap:.3f}): its ranking may be no better than the band values' at each "
            "place; its card's limits say what to try"
        ]
    baselines = card.baselines if isinstance(card, DetectCard) else None
    if baselines is None or "model" not in baselines.scores:
        return []
    missed = [
        name
        for name, beaten in (("pixel_peaks", baselines.beats_pixel_baseline),
                             ("scale_space_blobs", baselines.beats_blob_baseline))
        if beaten is False and name in baselines.scores
    ]  # fmt: skip
    if not missed:
        return []
    cue = f" ({baselines.blob_cue})" if baselines.blob_cue else ""
    against = " and ".join(
        f"{baselines.scores[name].ap:.3f} for {SIMPLE_BASELINES[name]}"
        + (cue if name == "scale_space_blobs" else "")
        for name in missed
    )
    return [
        f"the model did not beat its simple baselines by a clear margin on the held-out "
        f"strips when it was trained (AP@{baselines.iou:g} {baselines.scores['model'].ap:.3f} "
        f"against {against}): its boxes may be no better than theirs; its card's limits "
        "say what to try"
    ]

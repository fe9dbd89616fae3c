"""Blocked folds, spectral-context features, tabular heads and calibration."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from geoscreen.errors import InputError
from geoscreen.imagery.chips import Chip
from geoscreen.vision.augment import dihedral
from geoscreen.vision.folds import blocked_folds
from geoscreen.vision.learners import (
    CANDIDATES,
    Features,
    Fitted,
    balanced_weights,
    block_bootstrap_ap,
    cross_validate,
    fit,
    roc_auc,
)
from geoscreen.vision.tabular import LinearHead, TreeEnsembleHead, fit_platt
from geoscreen.vision.tilefeatures import SpectralContext, feature_names, n_features


def _chips(n: int, seed: int = 0, size: int = 16, extent: int = 400) -> list[Chip]:
    rng = np.random.default_rng(seed)
    chips = []
    for i in range(n):
        r, c = rng.integers(0, extent - size, 2)
        chips.append(Chip(int(r), int(c), size, int(i % 4 == 0), "positive"))
    return chips


def _overlap(a: Chip, b: Chip) -> bool:
    return (
        a.row_off < b.row_off + b.size
        and b.row_off < a.row_off + a.size
        and a.col_off < b.col_off + b.size
        and b.col_off < a.col_off + a.size
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_folds_are_disjoint_and_never_train_next_to_a_test_chip(seed: int) -> None:
    chips = _chips(300, seed)
    groups = ["a" if i % 3 else "b" for i in range(len(chips))]
    folds = blocked_folds(chips, groups, block_px=48, k=5, seed=seed)
    assert folds.k == 5
    tested = np.concatenate([test for _, test in folds.splits])
    assert np.array_equal(np.sort(tested), np.arange(len(chips)))  # each chip tested once
    for f, (train, test) in enumerate(folds.splits):
        assert not set(train) & set(test)
        assert np.all(folds.fold[test] == f) and np.all(folds.fold[train] != f)
        # No training chip shares a block with, or overlaps, a test chip of its scene.
        assert not set(folds.block[train]) & set(folds.block[test])
        for i in train:
            for j in test:
                if groups[i] == groups[j]:
                    assert not _overlap(chips[i], chips[j])
    positives = [int(sum(chips[i].label for i in test)) for _, test in folds.splits]
    assert max(positives) - min(positives) <= max(3, 0.5 * np.mean(positives))


def test_folds_refuse_positives_in_one_block() -> None:
    chips = [Chip(5, 5, 16, 1, "positive") for _ in range(10)]
    chips += [Chip(r, 300, 16, 0, "background") for r in range(0, 300, 20)]
    with pytest.raises(InputError, match="one block"):
        blocked_folds(chips, ["s"] * len(chips), block_px=48, where="labels.csv")


def test_folds_refuse_too_few_positives() -> None:
    chips = [Chip(r * 50, 0, 16, int(r < 3), "positive") for r in range(20)]
    with pytest.raises(InputError, match="at least 6 positive"):
        blocked_folds(chips, ["s"] * len(chips), block_px=48)


def test_spectral_features_names_shapes_and_views() -> None:
    extractor = SpectralContext(4, 32, relative=True)
    x = torch.rand(5, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    features = extractor(x)
    assert features.shape == (5, n_features(4, 32, relative=True)) == (5, extractor.out_features)
    assert len(feature_names(["b", "g", "r", "n"], 32, relative=True)) == features.shape[1]
    # A constant tile: means equal the value, spreads and gradients are zero, and each
    # band over the brightness is 0.25 / (0.25 + 0.01).
    flat = extractor(torch.full((1, 4, 32, 32), 0.25))
    names = feature_names(["b", "g", "r", "n"], 32, relative=True)
    for name, value in zip(names, flat[0].tolist(), strict=True):
        expected = 0.25 if ("mean_" in name and "grad" not in name) or ":p" in name else 0.0
        expected = 0.25 / 0.26 if "/brightness" in name else expected
        assert value == pytest.approx(expected, abs=1e-6), name
    # Centred windows on an odd-sized view: the same features under every flip/rotation.
    odd = SpectralContext(2, 31, relative=True)
    y = torch.rand(3, 2, 31, 31, generator=torch.Generator().manual_seed(1))
    base = odd(y)
    for k in range(8):
        assert torch.allclose(odd(dihedral(y, k)), base, atol=1e-5)


def test_tree_head_scores_exactly_as_scikit_learn() -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 12))
    y = (x[:, 0] + x[:, 3] ** 2 + rng.normal(scale=0.5, size=400) > 1).astype(int)
    model = HistGradientBoostingClassifier(max_iter=40, random_state=0).fit(x, y)
    head = TreeEnsembleHead.from_sklearn(model)
    test = rng.normal(size=(200, 12))
    ours = head(torch.as_tensor(test)).numpy()
    np.testing.assert_allclose(ours, model.decision_function(test), atol=1e-5)
    again = TreeEnsembleHead.from_state(head.state_dict(), "", head.depth)
    again.load_state_dict(head.state_dict())
    np.testing.assert_allclose(again(torch.as_tensor(test)).numpy(), ours)


def test_linear_head_matches_fitted_logistic_regression() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(loc=3.0, scale=2.0, size=(300, 5))
    y = (x[:, 1] > 3).astype(int)
    fitted = fit(CANDIDATES["spectral_lr"], x, y, seed=0)
    assert fitted.mean is not None and fitted.scale is not None
    head = LinearHead.from_sklearn(fitted.mean, fitted.scale, fitted.estimator)
    np.testing.assert_allclose(
        head(torch.as_tensor(x)).numpy(), fitted.raw(x), rtol=1e-4, atol=1e-4
    )


def test_platt_calibration_is_monotone_and_matches_rates() -> None:
    rng = np.random.default_rng(2)
    raw = rng.normal(size=4000)
    truth = rng.random(4000) < 1 / (1 + np.exp(-(2 * raw - 1)))
    calibrator = fit_platt(raw, truth)
    grid = torch.linspace(-6, 6, 500)
    probs = calibrator(grid).numpy()
    assert np.all(np.diff(probs) > 0)  # strictly increasing: never reorders tiles
    assert float(calibrator.a) == pytest.approx(2.0, rel=0.15)
    calibrated = calibrator(torch.as_tensor(raw)).numpy()
    for low, high in [(0.1, 0.3), (0.4, 0.6), (0.7, 0.9)]:
        inside = (calibrated >= low) & (calibrated < high)
        assert truth[inside].mean() == pytest.approx(calibrated[inside].mean(), abs=0.05)
    # Scores that rank the wrong way give the flat positive rate, not a reversal.
    flat = fit_platt(-raw, truth)
    assert float(flat.a) == 0.0
    assert float(flat(torch.zeros(1))[0]) == pytest.approx(truth.mean(), abs=1e-4)


def _random_labels(seed: int) -> tuple[list[Chip], np.ndarray, Any, np.random.Generator]:
    """240 chips with random labels (30% positive) and 4 blocked folds over them."""
    chips = _chips(240, seed=seed)
    rng = np.random.default_rng(seed)
    y = rng.random(len(chips)) < 0.3
    chips = [
        Chip(c.row_off, c.col_off, c.size, int(t), c.source) for c, t in zip(chips, y, strict=True)
    ]
    return chips, y, blocked_folds(chips, ["s"] * len(chips), block_px=64, k=4, seed=0), rng


def test_cross_validation_scores_each_chip_out_of_fold() -> None:
    """Out-of-fold scores come from models that never saw the chip's block: a learner
    that memorises (features unique per chip, labels random) scores at chance."""
    chips, y, folds, rng = _random_labels(3)
    memorise = rng.normal(size=(len(chips), 30))
    features = Features(spectral=memorise, pixel=memorise[:, :3])
    results = cross_validate([CANDIDATES["spectral_gbm"]], features, y.astype(int), folds, seed=0)
    oof = results["spectral_gbm"].oof
    assert not np.isnan(oof).any()
    assert roc_auc(oof, y) == pytest.approx(0.5, abs=0.12)


def test_block_bootstrap_interval_brackets_the_ap() -> None:
    rng = np.random.default_rng(4)
    truth = rng.random(500) < 0.3
    scores = truth + rng.normal(scale=0.8, size=500)
    blocks = rng.integers(0, 25, 500)
    low, high = block_bootstrap_ap(scores, truth, blocks, seed=0)
    from geoscreen.ranking import average_precision

    assert low < average_precision(scores, truth) < high
    assert block_bootstrap_ap(scores, truth, blocks, seed=0) == (low, high)


def test_spectral_learners_fit_on_every_colour_view_and_test_on_the_chip() -> None:
    """Views are training rows only: out-of-fold scores and refits read view 0."""
    rng = np.random.default_rng(5)
    plain = rng.normal(size=(40, 6))
    views = np.stack([plain, plain + 0.1, plain - 0.1])
    features = Features(spectral=plain, pixel=plain[:, :2], spectral_views=views)
    y = (np.arange(40) % 3 == 0).astype(int)
    rows = np.arange(10, 30)
    x, labels = features.training_rows(CANDIDATES["spectral_gbm"], rows, y)
    assert x.shape == (60, 6) and np.array_equal(labels, np.tile(y[rows], 3))
    assert np.array_equal(x[20:40], plain[rows] + 0.1)
    x, labels = features.training_rows(CANDIDATES["pixel_lr"], rows, y)  # the baseline: as is
    assert np.array_equal(x, plain[rows, :2]) and np.array_equal(labels, y[rows])
    assert features.matrix("spectral") is plain


def test_colour_jitter_gain_scales_channels_apart() -> None:
    from geoscreen.vision.augment import jitter

    x = torch.full((4, 3, 8, 8), 0.5)
    mask = torch.ones(4, 8, 8, dtype=torch.bool)
    plain = jitter(x, mask, torch.Generator().manual_seed(0))
    gained = jitter(x, mask, torch.Generator().manual_seed(0), gain=0.2)
    assert torch.allclose(plain[:, 0], plain[:, 1])  # one shift/scale for all channels
    assert not torch.allclose(gained[:, 0], gained[:, 1])
    ratio = gained / plain
    assert ((ratio > 0.8 - 1e-6) & (ratio < 1.2 + 1e-6)).all()


def test_scene_folds_test_every_scene_on_models_that_never_saw_it() -> None:
    from geoscreen.vision.folds import scene_folds_fit

    chips = _chips(90, seed=6)
    groups = [f"scene{i % 3}" for i in range(len(chips))]
    assert scene_folds_fit(chips, groups)
    folds = blocked_folds(chips, groups, block_px=64, k=5, seed=0, by_scene=True)
    assert folds.k == 3 and folds.record()["method"] == "whole-scene k-fold"
    scenes = np.array(groups)
    for train, test in folds.splits:
        assert np.unique(scenes[test]).size == 1
        assert scenes[test][0] not in set(scenes[train])
        assert train.size + test.size == len(chips)  # no buffer needed across scenes
    one_scene_positive = [
        Chip(c.row_off, c.col_off, c.size, int(g == "scene0" and c.label), c.source)
        for c, g in zip(chips, groups, strict=True)
    ]
    assert not scene_folds_fit(one_scene_positive, groups)


def _hard_negative_case(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positives near (1, 1), many easy negatives far away, 20 hard negatives that sit
    between (they look like positives): features, labels, which rows are hard."""
    rng = np.random.default_rng(seed)
    pos = rng.normal(1.0, 0.4, (60, 2))
    easy = rng.normal(-2.0, 0.6, (240, 2))
    hard = rng.normal(0.5, 0.3, (20, 2))
    x = np.concatenate([pos, easy, hard])
    y = np.r_[np.ones(60), np.zeros(260)].astype(np.int64)
    is_hard = np.r_[np.zeros(300, bool), np.ones(20, bool)]
    return x, y, is_hard


@pytest.mark.parametrize("name", ["spectral_lr", "spectral_gbm"])
def test_heavier_hard_negatives_score_lower(name: str) -> None:
    """Weighted, the hard negatives score lower against the positives than unweighted;
    weight 1 everywhere is the same fit as no weights."""
    x, y, is_hard = _hard_negative_case()
    candidate = CANDIDATES[name]
    plain = fit(candidate, x, y, 0)
    ones = fit(candidate, x, y, 0, np.ones(y.size))
    heavy = fit(candidate, x, y, 0, np.where(is_hard, 5.0, 1.0))
    np.testing.assert_array_equal(plain.raw(x), ones.raw(x))

    def gap(fitted: Fitted) -> float:  # mean score of positives minus of hard negatives
        raw = fitted.raw(x)
        return float(raw[y == 1].mean() - raw[is_hard].mean())

    assert gap(heavy) > gap(plain) + 0.1
    near = (y == 1) | is_hard  # positives against the hard negatives: ranked better
    truth = y[near].astype(bool)
    assert roc_auc(heavy.raw(x[near]), truth) >= roc_auc(plain.raw(x[near]), truth)


def test_balanced_weights_keep_each_class_half_and_bad_weights_are_refused() -> None:
    y = np.array([1, 1, 0, 0, 0, 0])
    w = balanced_weights(y, np.array([1.0, 1.0, 1.0, 1.0, 1.0, 5.0]))
    assert w[y == 1].sum() == pytest.approx(3.0) and w[y == 0].sum() == pytest.approx(3.0)
    assert w[5] == pytest.approx(5 * w[2])  # the hard one weighs 5 of the others
    np.testing.assert_allclose(balanced_weights(y, np.ones(6)), [1.5, 1.5, 0.75, 0.75, 0.75, 0.75])
    x = np.zeros((6, 2))
    with pytest.raises(ValueError, match="one positive number per row"):
        fit(CANDIDATES["spectral_lr"], x, y, 0, np.array([1.0, 1.0, 1.0, 1.0, 1.0, -1.0]))


def test_cross_validation_fits_each_fold_with_the_chip_weights() -> None:
    x, y, is_hard = _hard_negative_case()
    rng = np.random.default_rng(1)
    corners = rng.integers(0, 384, (y.size, 2))
    chips = [Chip(int(r), int(c), 16, int(k), "x") for (r, c), k in zip(corners, y, strict=True)]
    folds = blocked_folds(chips, ["s"] * y.size, block_px=64, k=3, seed=0)
    features = Features(spectral=x, pixel=x)
    lr = [CANDIDATES["spectral_lr"]]
    weight = np.where(is_hard, 5.0, 1.0)
    plain = cross_validate(lr, features, y, folds, 0)["spectral_lr"].oof
    heavy = cross_validate(lr, features, y, folds, 0, weight)["spectral_lr"].oof
    assert heavy[is_hard].mean() < plain[is_hard].mean()  # out of fold, too


def test_deep_learner_fits_every_view_of_training_chips_only_and_tests_their_mean() -> None:
    """``deep_lr`` fits on all 8 flips/rotations of each training chip, never on a view
    of a chip of the block it scores, and scores a chip by its mean over the views;
    ``combined_lr`` on a CPU fits and tests on view 0."""
    chips = _chips(200, seed=6)
    folds = blocked_folds(chips, ["s"] * len(chips), block_px=48, k=4, seed=0)
    y = np.array([c.label for c in chips])
    n, views = len(chips), 8
    # Column 0 names the chip, column 1 the view: the rows fitted on say where they came from.
    ids = np.arange(n, dtype=np.float64)
    deep = np.stack([np.stack([ids, np.full(n, v)], axis=1) for v in range(views)])
    spectral = np.random.default_rng(6).normal(size=(n, 4))
    features = Features(spectral, spectral[:, :3], deep_views=deep, combined_views=1)
    for train, test in folds.splits:
        x, labels = features.training_rows(CANDIDATES["deep_lr"], train, y)
        fitted_chips = x[:, 0].astype(int)
        assert not set(fitted_chips) & set(test)
        assert np.array_equal(np.bincount(fitted_chips, minlength=n)[train], np.full(train.size, 8))
        assert np.array_equal(labels, y[fitted_chips])
        weights = features.training_weights(CANDIDATES["deep_lr"], train, np.ones(n))
        assert weights is not None and weights.size == x.shape[0]
        x, _ = features.training_rows(CANDIDATES["combined_lr"], train, y)
        assert x.shape == (train.size, 2 + 4) and np.all(x[:, 1] == 0)
    np.testing.assert_allclose(features.matrix("deep"), np.stack([ids, np.full(n, 3.5)], axis=1))
    assert np.all(features.matrix("combined")[:, 1] == 0)


def test_deep_learner_out_of_fold_scores_are_at_chance_on_memorised_chips() -> None:
    """Views of one chip look alike; if any view of a scored chip had been fitted on, a
    learner that memorises (chip-unique features, random labels) would score above chance."""
    chips, y, folds, rng = _random_labels(7)
    chip = rng.normal(size=(len(chips), 30))
    deep = np.stack([chip + rng.normal(scale=0.05, size=chip.shape) for _ in range(8)])
    features = Features(spectral=chip[:, :5], pixel=chip[:, :3], deep_views=deep)
    oof = cross_validate([CANDIDATES["deep_lr"]], features, y.astype(int), folds, seed=0)
    scores = oof["deep_lr"].oof
    assert not np.isnan(scores).any()
    assert roc_auc(scores, y) == pytest.approx(0.5, abs=0.12)


def test_deep_features_averaged_over_views_do_not_change_under_flips() -> None:
    """The screening scorer of ``deep_lr`` averages the backbone over the 8 symmetries it
    was fitted on: each view's features as in training, and their mean the same for a
    tile flipped or rotated."""
    from geoscreen.vision.backbones import BackboneSpec, build_backbone
    from geoscreen.vision.scorer import DeepFeatures

    torch.manual_seed(0)
    one = DeepFeatures(build_backbone(BackboneSpec("resnet18", 3)), [0.5] * 3, [0.25] * 3).eval()
    eight = one.with_views(8)
    assert eight.backbone is one.backbone and eight.views == 8 and one.views == 1
    x = torch.rand(2, 3, 32, 32)
    with torch.inference_mode():
        mean = torch.stack([one(dihedral(x, k)) for k in range(8)]).mean(0)
        torch.testing.assert_close(eight(x), mean)
        for k in range(8):
            torch.testing.assert_close(eight(dihedral(x, k)), mean, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="views"):
        one.with_views(9)

"""Which part of a scene a detector trains on: every labelled crop whole, a labelled corner of
a larger scene alone (its unlabelled objects are not taught as background), and a clear
refusal when the imagery to train on would not fit in memory."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml

from geoscreen.cli import main
from geoscreen.errors import InputError
from geoscreen.profiles import Profile, load_profile
from geoscreen.samples import sample_path
from geoscreen.vision import detect_scenes
from geoscreen.vision.detect_scenes import AUTO_SHARE, load_detection_data, training_window
from geoscreen.vision.modelcard import DetectCard

CONFIGS = Path(__file__).resolve().parents[2] / "geoscreen" / "configs"
CROWNS = ["Tree", "Dead", "Alive"]


@pytest.fixture(scope="module")
def profile() -> Profile:
    return load_profile(CONFIGS / "tree_crowns_detect_neon.yaml")


@pytest.fixture(scope="module")
def tiled_osbs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """OSBS_029 repeated 3 x 3 (1200 x 1200 px of real canopy, its CRS and origin), with
    the 61 labelled crowns of the top-left copy only: the other eight copies hold 488
    crowns nobody outlined, as an orthomosaic labelled in one corner does."""
    folder = tmp_path_factory.mktemp("tiled-osbs")
    with rasterio.open(sample_path("neon_osbs")) as src:
        pixels, meta = src.read(), src.meta.copy()
    meta.update(width=pixels.shape[2] * 3, height=pixels.shape[1] * 3)
    image = folder / "mosaic.tif"
    with rasterio.open(image, "w", **meta) as dst:
        dst.write(np.tile(pixels, (1, 3, 3)))
    rows = Path(sample_path("neon_osbs_labels")).read_text(encoding="utf-8").splitlines()
    labels = folder / "corner.csv"
    labels.write_text("\n".join([rows[0], *(r.replace("OSBS_029.tif", image.name)
                                            for r in rows[1:])]) + "\n")  # fmt: skip
    return image, labels


def test_every_bundled_crop_is_labelled_all_over_and_read_whole(profile: Profile) -> None:
    """The NEON crops (labelled all over) train on every pixel, as before the option."""
    for name in ("neon_osbs", "neon_yell", "neon_yell2", "neon_soap"):
        scene = sample_path(name)
        data = load_detection_data(profile, [sample_path(f"{name}_labels")], [scene], CROWNS)
        view, record = data.views[0], data.scenes[0]
        assert data.windows == [None]
        assert view.image.shape[1:] == (record.height, record.width)
        whole = training_window(view.boxes, view.negatives, record.width, record.height, "labels")
        assert whole is None, name  # even asked for the labels' extent: it is all of it


def test_the_window_is_the_labels_extent_widened_by_a_median_object() -> None:
    boxes = np.array([[100, 200, 120, 220], [300, 250, 330, 280], [150, 400, 175, 425]], float)
    assert training_window(boxes, np.zeros((0, 4)), 2000, 2000, "auto") == (75, 175, 355, 450)
    # A rejected outline (hard negative) is a label too: it widens the extent.
    hard = np.array([[900, 900, 925, 925]], float)
    assert training_window(boxes, hard, 2000, 2000, "labels") == (75, 175, 950, 950)
    # Clipped to the scene; the whole scene is None (read whole, nothing to record).
    assert training_window(boxes, np.zeros((0, 4)), 340, 430, "labels") == (75, 175, 340, 430)
    corners = np.array([[10, 10, 30, 30], [880, 880, 900, 900]], float)
    assert training_window(corners, np.zeros((0, 4)), 910, 910, "labels") is None
    # auto keeps the whole scene once the extent covers half of it; labels does not.
    near = np.array([[20, 20, 40, 40], [300, 300, 320, 320]], float)  # extent 0-340 px
    assert AUTO_SHARE == 0.5 and 340**2 / 480**2 > 0.5 > 340**2 / 490**2
    assert training_window(near, np.zeros((0, 4)), 480, 480, "auto") is None
    assert training_window(near, np.zeros((0, 4)), 480, 480, "labels") == (0, 0, 340, 340)
    assert training_window(near, np.zeros((0, 4)), 490, 490, "auto") == (0, 0, 340, 340)
    assert training_window(boxes, np.zeros((0, 4)), 2000, 2000, "scene") is None
    # An image annotated as empty has no extent: every pixel of it is background.
    assert training_window(np.zeros((0, 4)), np.zeros((0, 4)), 2000, 2000, "labels") is None
    with pytest.raises(ValueError, match="train_area"):
        training_window(boxes, hard, 2000, 2000, "everywhere")


def test_a_labelled_corner_of_a_larger_scene_is_read_alone(
    profile: Profile, tiled_osbs: tuple[Path, Path]
) -> None:
    image, labels = tiled_osbs
    corner = load_detection_data(profile, [labels], [image], CROWNS)
    whole = load_detection_data(profile, [labels], [image], CROWNS, train_area="scene")
    assert whole.windows == [None] and whole.views[0].image.shape == (3, 1200, 1200)
    (window,) = corner.windows
    assert window is not None
    c0, r0, c1, r1 = window
    assert (c0, r0) == (0, 0) and 400 < c1 < 460 and 400 < r1 < 460  # one copy, and a crown
    view = corner.views[0]
    assert view.image.shape == (3, r1, c1) and view.area == (0, 0, c1, r1)
    # The same pixels and boxes as the whole scene's, in the window's own coordinates.
    np.testing.assert_array_equal(view.image.numpy(), whole.views[0].image[:, r0:r1, c0:c1])
    np.testing.assert_allclose(view.boxes + np.array([c0, r0, c0, r0]), whole.views[0].boxes)
    assert corner.objects == whole.objects == 61


def test_too_much_imagery_for_memory_is_refused_before_reading(
    profile: Profile, tiled_osbs: tuple[Path, Path], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    image, labels = tiled_osbs
    # 1200 x 1200 px x 3 bands x 12 bytes: 52 MB; the labelled corner alone about 7 MB.
    with pytest.raises(InputError, match=r"about 49 MiB of imagery in memory, more than the "
                       r"10 MiB available") as info:  # fmt: skip
        load_detection_data(profile, [labels], [image], CROWNS, train_area="scene",
                            available=10 * 2**20)  # fmt: skip
    assert "1200 x 1200 px of mosaic.tif" in info.value.message
    assert "--train-area labels" in (info.value.fix or "")
    load_detection_data(profile, [labels], [image], CROWNS, available=10 * 2**20)
    # Through the CLI: exit 2, one message, no model folder.
    monkeypatch.setattr(detect_scenes, "available_memory", lambda: 10 * 2**20)
    out, err = tmp_path / "model", io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["train", str(CONFIGS / "tree_crowns_detect_neon.yaml"), "--labels",
                     str(labels), "--imagery", str(image), "--out", str(out),
                     "--train-area", "scene"])  # fmt: skip
    assert code == 2 and "49 MiB of imagery in memory" in err.getvalue()
    assert "Traceback" not in err.getvalue() and not out.exists()


def test_the_card_says_which_part_was_trained_on(
    tiled_osbs: tuple[Path, Path], tmp_path: Path
) -> None:
    """Blobs (fitted in seconds) on the corner: ``train`` says what it read and the card
    records the window, in model.yaml and MODEL_CARD.md, with a limit."""
    data = yaml.safe_load((CONFIGS / "tree_crowns_detect_neon.yaml").read_text(encoding="utf-8"))
    data["detection"].update(architecture="blobs", paired_colour_rotation=0.0)
    blob_profile = tmp_path / "crowns.yaml"
    blob_profile.write_text(yaml.safe_dump(data), encoding="utf-8")
    image, labels = tiled_osbs
    out, err = tmp_path / "model", io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["train", str(blob_profile), "--labels", str(labels), "--imagery",
                     str(image), "--out", str(out)])  # fmt: skip
    assert code == 0
    said = err.getvalue()
    assert "mosaic.tif: trained on its labels' extent" in said and "of 1200 x 1200" in said
    card = DetectCard.model_validate(yaml.safe_load((out / "model.yaml").read_text()))
    (scene,) = card.data.scenes
    assert scene.window is not None and scene.window[:2] == [0, 0] and scene.window[2] < 460
    assert card.training is not None and card.training.options["train_area"] == "auto"
    assert any("trained on their labels' extent only" in limit for limit in card.limits)
    page = (out / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert f"trained on its labels' extent: columns 0-{scene.window[2]}" in page


def test_train_area_is_refused_for_a_tile_classifier(tmp_path: Path) -> None:
    out, err = tmp_path / "model", io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["train", str(CONFIGS / "tree_crowns_neon.yaml"), "--labels",
                     str(sample_path("neon_osbs_labels")), "--imagery",
                     str(sample_path("neon_osbs")), "--out", str(out),
                     "--train-area", "labels"])  # fmt: skip
    assert code == 2 and "--train-area chooses where a detector learns background" in err.getvalue()
    assert not out.exists()

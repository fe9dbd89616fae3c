"""``geoscreen train`` shows the label report first and refuses files with many invalid rows."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pytest

from geoscreen.cli.labelcheck import MAX_INVALID_SHARE, check_training_labels
from geoscreen.errors import InputError
from geoscreen.profiles import load_profile

PROFILE = Path(__file__).resolve().parents[2] / "geoscreen" / "configs" / "tree_crowns_neon.yaml"
Run = Callable[..., tuple[int, str, str]]


def _broken(source: Path, out: Path, bad_boxes: int, unlabelled: int, outside: int = 0) -> Path:
    """The real OSBS labels with the first rows spoiled: swapped x, no label, far away."""
    with source.open(newline="") as f:
        rows = list(csv.DictReader(f))
    for i in range(bad_boxes):
        rows[i]["xmin"], rows[i]["xmax"] = rows[i]["xmax"], rows[i]["xmin"]
    for i in range(bad_boxes, bad_boxes + unlabelled):
        rows[i]["label"] = ""
    for i in range(bad_boxes + unlabelled, bad_boxes + unlabelled + outside):
        rows[i]["xmin"], rows[i]["xmax"] = "5000", "5010"
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out


def _rows(path: Path) -> int:
    with path.open() as f:
        return sum(1 for _ in f) - 1


def test_too_many_invalid_rows_refused_before_training(
    run: Run, tmp_path: Path, osbs_path: Path, osbs_labels_path: Path
) -> None:
    total = _rows(osbs_labels_path)
    bad = int(total * 0.2)
    labels = _broken(osbs_labels_path, tmp_path / "labels.csv", bad - 2, 2)
    out = tmp_path / "model"
    code, stdout, err = run("train", PROFILE, "--labels", labels, "--imagery", osbs_path,
                            "--out", out, "--device", "cpu")  # fmt: skip
    assert code == 2 and stdout == "" and "Traceback" not in err
    lines = err.splitlines()
    assert lines[0] == (
        f"labels {labels}: labels.csv: {total - bad} of {total} labels kept ({total - bad} "
        f"positive, 0 negative); {bad} invalid ({bad - 2} bad box (need numbers with xmin < "
        "xmax and ymin < ymax), 2 missing label)"
    )
    assert lines[1].startswith(f"labels {labels}: {bad - 2} rows invalid (bad box")
    assert lines[1].endswith(f"rows 0, 1, 2, 3, 4, 5, 6, 7 and {bad - 2 - 8} more")
    assert lines[2] == f"labels {labels}: 2 rows invalid (missing label): rows {bad - 2}, {bad - 1}"
    assert lines[3] == (
        f"geoscreen: error: {labels}: {bad} of {total} label rows ({bad / total:.0%}) are "
        f"invalid, more than the 10% geoscreen drops without asking. Fix those rows (listed "
        "above; often a wrong column or coordinate order), or add --allow-dropped to train on "
        "the rest."
    )
    assert len(lines) == 4 and not out.exists()


def test_report_without_refusal(tmp_path: Path, osbs_path: Path, osbs_labels_path: Path) -> None:
    """A few invalid rows, and rows outside the scene (not invalid): reported, no refusal."""
    total = _rows(osbs_labels_path)
    labels = _broken(osbs_labels_path, tmp_path / "labels.csv", 1, 1, outside=40)
    said: list[str] = []
    printed = check_training_labels(load_profile(PROFILE), [str(labels)], [str(osbs_path)], None,
                                    allow_dropped=False, say=said.append)  # fmt: skip
    assert said[0] in printed and f"{total - 42} of {total} labels kept" in said[0]
    assert said[1:] == [
        f"labels {labels}: 1 rows invalid (bad box (need numbers with xmin < xmax and ymin < "
        "ymax)): rows 0",
        f"labels {labels}: 1 rows invalid (missing label): rows 1",
        f"labels {labels}: 40 rows outside every scene (not counted as invalid): rows 2, 3, 4, "
        "5, 6, 7, 8, 9 and 32 more",
    ]


def test_allow_dropped_goes_on(tmp_path: Path, osbs_path: Path, osbs_labels_path: Path) -> None:
    total = _rows(osbs_labels_path)
    bad = int(total * MAX_INVALID_SHARE) + 5
    labels = _broken(osbs_labels_path, tmp_path / "labels.csv", bad, 0)
    args = (load_profile(PROFILE), [str(labels)], [str(osbs_path)], None)
    with pytest.raises(InputError, match="--allow-dropped"):
        check_training_labels(*args, allow_dropped=False, say=lambda _m: None)
    said: list[str] = []
    check_training_labels(*args, allow_dropped=True, say=said.append)
    assert f"{bad} rows invalid (bad box" in said[1]


def test_a_file_no_scene_can_use_is_refused(run: Run, tmp_path: Path, osbs_path: Path) -> None:
    labels = tmp_path / "empty.csv"
    labels.write_text("image_path,xmin,ymin,xmax,ymax,label\n")
    code, _, err = run("train", PROFILE, "--labels", labels, "--imagery", osbs_path,
                       "--out", tmp_path / "m")  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "holds no labels. Add labelled" in err
    assert not (tmp_path / "m").exists()


def test_an_annotation_without_objects_passes_the_check(
    tmp_path: Path, osbs_path: Path, osbs_labels_path: Path
) -> None:
    """An empty VOC file of one image, among scenes it does not name: reported as an
    image without objects, not refused as a file no scene could use."""
    from geoscreen.samples import sample_path

    empty = tmp_path / "SOAP_061.xml"
    empty.write_text("<annotation><filename>SOAP_061.png</filename></annotation>")
    said: list[str] = []
    check_training_labels(load_profile(PROFILE), [str(osbs_labels_path), str(empty)],
                          [str(osbs_path), str(sample_path("neon_soap"))], None,
                          allow_dropped=False, say=said.append)  # fmt: skip
    assert f"labels {empty}: SOAP_061.xml: an annotation without objects (the image holds " \
           "none)" in said  # fmt: skip

"""The label report that ``geoscreen train`` shows before training, and its refusal.

Every label file is read onto every scene first (as training will read it), and the
command prints what was kept, what was dropped and why, row by row. Rows with no
usable geometry or label are *invalid*; when more than :data:`MAX_INVALID_SHARE` of a
file's rows are invalid, the file is probably broken (a wrong column, a wrong
coordinate order), so ``train`` refuses unless ``--allow-dropped`` says to go on.
Rows that lie outside every scene are reported but not counted as invalid: a label
file may cover more ground than the imagery.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from geoscreen.errors import InputError

if TYPE_CHECKING:
    from geoscreen.profiles import Profile

MAX_INVALID_SHARE = 0.10
SHOW_ROWS = 8  # rows listed per reason
OUTSIDE = "outside the scene"


@dataclass
class FileReport:
    """One label file over every scene: which rows were kept, and why others were not."""

    path: str
    rows: int = 0
    kept: set[int] = field(default_factory=set)
    invalid: dict[int, str] = field(default_factory=dict)
    outside: set[int] = field(default_factory=set)
    errors: list[InputError] = field(default_factory=list)

    @property
    def invalid_rows(self) -> dict[int, str]:
        """Rows no scene could use because of the row itself."""
        return {r: why for r, why in self.invalid.items() if r not in self.kept}

    @property
    def outside_rows(self) -> set[int]:
        """Rows valid but outside every scene."""
        return self.outside - self.kept - set(self.invalid)

    def dropped_lines(self) -> list[str]:
        """``N rows invalid (reason): rows 3, 9, ...`` per reason, then the ones outside."""
        by_reason: dict[str, list[int]] = defaultdict(list)
        for row, why in sorted(self.invalid_rows.items()):
            by_reason[why].append(row)
        lines = [
            f"{len(rows)} rows invalid ({why}): {_rows(rows)}"
            for why, rows in sorted(by_reason.items(), key=lambda kv: -len(kv[1]))
        ]
        if self.outside_rows:
            lines.append(
                f"{len(self.outside_rows)} rows outside every scene (not counted as invalid): "
                f"{_rows(sorted(self.outside_rows))}"
            )
        return lines


def _rows(rows: list[int]) -> str:
    shown = ", ".join(str(r) for r in rows[:SHOW_ROWS])
    return f"rows {shown}" + (f" and {len(rows) - SHOW_ROWS} more" if len(rows) > SHOW_ROWS else "")


def check_training_labels(
    profile: Profile,
    labels: Sequence[str],
    imagery: Sequence[str],
    positive_classes: Sequence[str] | None,
    *,
    allow_dropped: bool,
    say: Callable[[str], None],
) -> set[str]:
    """Print the label report; refuse too many invalid rows. Returns the lines printed.

    Rows are numbered from 0, the first row after a CSV's header or the first feature.
    """
    from geoscreen.imagery.scene import open_scene
    from geoscreen.labels import load_labels

    rules = profile.labels
    if profile.model.task == "detect":
        positive_classes = None  # as the detector's training reads them
    else:  # as the classifier's training reads them
        positive_classes = list(positive_classes or ()) or (
            rules.positive_classes if rules else None
        )
    scenes = [open_scene(path, sensor=profile.imagery.sensor) for path in imagery]
    printed: set[str] = set()
    reports = []
    for label_path in labels:
        report = FileReport(label_path)
        loaded = False
        for scene in scenes:
            try:
                found = load_labels(label_path, scene, positive_classes=positive_classes)
            except InputError as exc:  # e.g. no labels on this scene: another scene's
                report.errors.append(exc)
                continue
            loaded = True  # (an annotation without objects loads with no rows)
            line = f"labels {label_path}: {found.report.summary()}"
            say(line)
            printed.add(line)
            report.rows = max(report.rows, found.report.rows)
            report.kept.update(int(r) for r in found.frame["source_row"])
            for row, why in found.report.dropped:
                if why == OUTSIDE:
                    report.outside.add(row)
                else:
                    report.invalid.setdefault(row, why)
        if not loaded and report.errors:
            raise report.errors[0]  # no scene could use the file at all
        for line in report.dropped_lines():
            say(f"labels {label_path}: {line}")
        reports.append(report)
    for report in reports:
        bad = len(report.invalid_rows)
        if report.rows and bad / report.rows > MAX_INVALID_SHARE and not allow_dropped:
            raise InputError(
                f"{bad} of {report.rows} label rows ({bad / report.rows:.0%}) are invalid, more "
                f"than the {MAX_INVALID_SHARE:.0%} geoscreen drops without asking",
                where=report.path,
                fix="Fix those rows (listed above; often a wrong column or coordinate order), "
                "or add --allow-dropped to train on the rest.",
            )
    return printed


def without(printed: set[str], say: Callable[[str], None]) -> Callable[[str], None]:
    """``say``, silent for lines already printed (the trainer repeats the label report)."""

    def quiet(message: str) -> None:
        if message not in printed:
            say(message)

    return quiet

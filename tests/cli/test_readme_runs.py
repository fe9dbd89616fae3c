"""The README's walkthrough runs as written.

Every shell block of README.md is marked in the line above it: ``<!-- readme-test: run
-->`` or ``<!-- readme-test: skip (why) -->``; an unmarked block fails the first test, so
nothing is left out silently. The slow test runs each line of the ``run`` blocks, in
order, with ``bash`` in an empty folder, with the installed ``geoscreen`` command first on
the PATH (real subprocesses, nothing mocked). Lines that take ``--password-stdin`` read
the password the test writes on every line's stdin. Every line must exit 0; then a few
of the files the walkthrough says it writes are read back.

Run time (measured with ``-rP``, which prints each line's seconds): about 2.7 minutes on
one shared CPU core, 72 s of it training the 2-epoch crown detector (the smallest real
detection run: OSBS_029's 61 crowns), 6-9 s each for the two tree-crown classifiers, the
rest a few seconds a line.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = re.compile(r"<!-- readme-test: (run|skip \(([^)]+)\)) -->")
SHELL = ("```bash", "```sh", "```shell")
PASSWORD = "a long walkthrough password\n"


@dataclass(frozen=True)
class Block:
    """A shell block: where it starts, whether it runs (or why not), its command lines."""

    line: int
    marker: str | None
    lines: list[tuple[int, str]]


def _blocks(text: str) -> list[Block]:
    """The README's shell blocks, each with the marker on the last non-blank line above it."""
    rows = text.splitlines()
    blocks: list[Block] = []
    number = 0
    while number < len(rows):
        if rows[number].strip() not in SHELL:
            number += 1
            continue
        above = next((r.strip() for r in reversed(rows[:number]) if r.strip()), "")
        found = MARKER.fullmatch(above)
        start = number + 1
        lines: list[tuple[int, str]] = []
        pending = ""
        number += 1
        while number < len(rows) and not rows[number].startswith("```"):
            row = rows[number]
            if row.rstrip().endswith("\\"):
                pending += row.strip()[:-1].rstrip() + " "
            elif pending:
                lines.append((number + 1, pending + row.strip()))
                pending = ""
            elif row.strip() and not row.lstrip().startswith("#"):
                lines.append((number + 1, row))
            number += 1
        blocks.append(Block(start, found.group(1) if found else None, lines))
        number += 1
    return blocks


def test_every_readme_shell_block_says_whether_it_runs() -> None:
    blocks = _blocks(README.read_text(encoding="utf-8"))
    assert [b.line for b in blocks if b.marker is None] == []
    running = [b for b in blocks if b.marker == "run"]
    assert len(running) >= 2 and sum(len(b.lines) for b in running) >= 30
    loop = " ".join(line for b in running for _, line in b.lines)
    for verb in ("samples copy", "train", "screen", "sites extract", "review load", "scan",
                 "review set", "export", "audit verify", "evaluate"):  # fmt: skip
        assert f"geoscreen {verb} " in loop


def test_the_block_reader_sees_markers_and_continuations() -> None:
    text = (
        "<!-- readme-test: run -->\n```bash\n# a comment\ngeoscreen info a.tif   # note\n"
        "geoscreen tile a.tif \\\n  --out t.parquet\n```\n\n```sh\nmake demo\n```\n"
        "<!-- readme-test: skip (a server) -->\n\n```bash\ngeoscreen serve\n```\n"
    )
    blocks = _blocks(text)
    assert [b.marker for b in blocks] == ["run", None, "skip (a server)"]
    assert [line for _, line in blocks[0].lines] == [
        "geoscreen info a.tif   # note",
        "geoscreen tile a.tif --out t.parquet",
    ]


def _geoscreen_on_path(folder: Path) -> dict[str, str]:
    """An environment whose PATH starts with ``geoscreen``: the console script installed
    next to this Python (as ``pip install`` puts it), else ``python -m geoscreen``."""
    folder.mkdir()
    script = Path(sys.executable).parent / "geoscreen"
    command = (
        shlex.quote(str(script))
        if script.exists()
        else f"{shlex.quote(sys.executable)} -m geoscreen"
    )
    shim = folder / "geoscreen"
    shim.write_text(f'#!/bin/sh\nexec {command} "$@"\n', encoding="utf-8")
    shim.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEOSCREEN_")}
    env["PATH"] = f"{folder}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.mark.slow
def test_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    env = _geoscreen_on_path(tmp_path / "bin")
    work = tmp_path / "work"
    work.mkdir()
    outputs: dict[str, str] = {}
    timings: list[str] = []  # shown with -s (or -rP): where the minutes go
    for block in _blocks(README.read_text(encoding="utf-8")):
        if block.marker != "run":
            continue
        for number, line in block.lines:
            start = time.monotonic()
            done = subprocess.run(
                ["bash", "-o", "pipefail", "-c", line], cwd=work, env=env, input=PASSWORD,
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            timings.append(f"{time.monotonic() - start:6.1f} s  README.md:{number}")
            assert done.returncode == 0, (
                f"README.md:{number}: exit {done.returncode}: {line}\n"
                f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
            )
            outputs[line.split("  #")[0].strip()] = done.stdout + done.stderr

    print("\n".join(timings))
    # step 0: the samples, the drop folder and the profiles are where the loop reads them
    assert len(list((work / "samples" / "incoming").glob("osbs_029_part*.tif"))) == 4
    assert (work / "samples" / "profiles" / "tree_crowns_neon.yaml").is_file()
    # steps 1-3: files the lines name, and screen's JSON summary
    assert len(gpd.read_parquet(work / "tiles.parquet")) > 0
    summary = json.loads((work / "screened" / "screen.json").read_text(encoding="utf-8"))
    assert summary["kind"] == "screen" and summary["profile"] == "tree_crowns_neon"
    assert [Path(s["scene"]).name for s in summary["scenes"]] == ["osbs_029_part1.tif"]
    assert len(gpd.read_parquet(work / "sites.parquet")) >= 1
    for model in ("trees", "trees-v2", "crowns", "like-these"):
        assert (work / "models" / model / "model.yaml").is_file()
    scans = [text for line, text in outputs.items() if line.startswith("geoscreen scan ")]
    assert len(scans) == 3 and "4 screened" in scans[0]
    # the kept similarity search scanned the drop folder at its own threshold
    assert "4 screened" in scans[1] and "candidate sites" in scans[1]
    # step 4: the decisions, in the workflow's order, and what they let out
    history = outputs["geoscreen review history 1"]
    assert "new -> in_review" in history and "confirmed -> escalated" in history
    shared = gpd.read_file(work / "share.gpkg")
    assert list(shared["id"]) == [1] and list(shared["status"]) == ["escalated"]
    assert outputs["geoscreen audit verify"].startswith("ok: ")
    assert (work / "geoscreen-2026-05-01.sqlite").is_file() and (work / "map.html").is_file()
    # step 5: the evaluation's JSON, measured on YELL's 279 labelled crowns
    metrics = json.loads((work / "report" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["truth"] == 279 and metrics["tp"] + metrics["fn"] == 279
    assert metrics["predicted"] > 0 and 0.0 <= metrics["average_precision"] <= 1.0
    # a detection screen holds sites already: 'sites extract' says where, in one line
    again = ["geoscreen", "sites", "extract", "detected/", "--out", "again.parquet"]
    done = subprocess.run(again, cwd=work, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "/sites.parquet as it is" in done.stderr and not (work / "again.parquet").exists()

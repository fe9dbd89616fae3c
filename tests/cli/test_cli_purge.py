"""``geoscreen review purge`` end to end: dry run, purge, JSON, and bad input (exit 2,
one line, nothing changed)."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import pytest

from geoscreen.cli import main
from geoscreen.review.testing import make_sites

CONFIGS = Path(__file__).resolve().parents[2] / "geoscreen" / "configs"
AS_ADMIN = "--as-admin-of-this-file"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _profile(folder: Path, days: object) -> Path:
    text = (CONFIGS / "brick_kilns_s2.yaml").read_text(encoding="utf-8")
    assert "  reason_required: true\n" in text
    text = text.replace(
        "  reason_required: true\n", f"  reason_required: true\n  retain_evidence_days: {days}\n"
    )
    path = folder / f"kilns_{days}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _state(db: Path, folder: Path) -> tuple[int, list[str]]:
    with sqlite3.connect(db) as conn:
        seq = conn.execute("SELECT seq FROM audit_head").fetchone()[0]
    return seq, sorted(p.name for p in (folder / "evidence").iterdir())


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Path:
    """A store with 5 candidates whose chips exist; candidate 1 rejected, run loaded 40 days
    ago (the load time is set back in the file)."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "review.sqlite"
    monkeypatch.setenv("GEOSCREEN_DB", str(path))
    (tmp_path / "evidence").mkdir()
    for i in range(5):
        (tmp_path / "evidence" / f"site-{i:07d}.png").write_bytes(bytes([i]) * 100)
    for name, role in [("ann", "analyst"), ("sue", "supervisor")]:
        assert run(capsys, "users", "add", name, "--role", role, AS_ADMIN)[0] == 0
    sites = make_sites(tmp_path / "s.parquet", 5)
    assert run(capsys, "review", "load", str(sites), AS_ADMIN)[0] == 0
    code, _, err = run(capsys, "review", "set", "1", "rejected", "--user", "ann", "--reason", "no",
                       AS_ADMIN)  # fmt: skip
    assert code == 0, err
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE runs SET completed_at = datetime('now', '-40 days')")
    return path


def test_purge_rejected_then_expired(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _state(db, tmp_path)
    code, out, _ = run(capsys, "review", "purge", "--dry-run")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 2
    assert lines[0].split()[:2] == ["1", "rejected"] and lines[0].endswith("site-0000000.png")
    assert lines[1].startswith("would delete 1 evidence chips (0.0 MB) of 1 candidates (1 rejected")
    assert _state(db, tmp_path) == before

    code, out, _ = run(capsys, "review", "purge", "--user", "sue", AS_ADMIN)
    assert code == 0 and out.startswith("deleted 1 evidence chips")
    assert _state(db, tmp_path) == (before[0] + 2, before[1][1:])
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT actor, action, after FROM audit_log ORDER BY seq DESC LIMIT 2"
        ).fetchall()
    assert [(a, b) for a, b, _ in rows] == [("sue", "purge"), ("sue", "evidence_purge")]
    assert all(json.loads(after)["local_override"].startswith("local:") for *_, after in rows)

    thirty = _profile(tmp_path, 30)
    code, out, _ = run(capsys, "review", "purge", "--profile", str(thirty), "--json")
    result = json.loads(out)
    assert code == 0 and result["dry_run"] is False
    assert (result["files"], result["expired_candidates"], result["limits"]) == (
        4, 4, {"brick_kilns_s2": 30},
    )  # fmt: skip
    assert sorted(i["candidate_id"] for i in result["items"]) == [2, 3, 4, 5]
    assert _state(db, tmp_path) == (before[0] + 2 + 5, [])
    code, out, _ = run(capsys, "audit", "verify")
    assert code == 0, out
    shown = json.loads(run(capsys, "review", "show", "3", "--json")[1])
    assert shown["evidence_path"] and shown["status"] == "new"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--profile", "missing.yaml"], "missing.yaml"),
        (["--profile", "{zero}"], "retain_evidence_days"),
        (["--profile", "{text}"], "retain_evidence_days"),
        (["--profile", "{thirty}", "--profile", "{ten}"], "two profiles named 'brick_kilns_s2'"),
        (["--user", "nobody", AS_ADMIN], "nobody"),
        (["--user", "ann", AS_ADMIN], "needs supervisor"),
        (["--user", "sue"], "must give a password"),
        ([AS_ADMIN], "go with --user NAME"),
    ],
)
def test_bad_input_changes_nothing(
    db: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    files = {
        "zero": _profile(tmp_path, 0),
        "text": _profile(tmp_path, "soon"),
        "thirty": _profile(tmp_path, 30),
        "ten": _profile(tmp_path, 10),
    }
    before = _state(db, tmp_path)
    code, out, err = run(capsys, "review", "purge", *[a.format(**files) for a in args])
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert _state(db, tmp_path) == before


def test_evidence_root_as_for_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Chips stored as relative paths that only the server's --evidence-root finds."""
    work, chips = tmp_path / "work", tmp_path / "chips"
    work.mkdir()
    monkeypatch.chdir(work)
    db = tmp_path / "store" / "review.sqlite"
    db.parent.mkdir()
    monkeypatch.setenv("GEOSCREEN_DB", str(db))
    sites = make_sites(tmp_path / "s.parquet", 3)
    assert run(capsys, "review", "load", str(sites), AS_ADMIN)[0] == 0
    (chips / "evidence").mkdir(parents=True)
    for i in range(3):
        (chips / "evidence" / f"site-{i:07d}.png").write_bytes(b"png")
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE runs SET completed_at = datetime('now', '-40 days')")
    ten = _profile(tmp_path, 10)
    code, out, _ = run(capsys, "review", "purge", "--profile", str(ten), "--json")
    assert code == 0 and json.loads(out)["files"] == 0  # not found: nothing to delete
    code, out, _ = run(capsys, "review", "purge", "--profile", str(ten), "--json",
                       "--evidence-root", str(chips))  # fmt: skip
    assert code == 0 and json.loads(out)["files"] == 3
    assert list((chips / "evidence").iterdir()) == []


def test_profile_show_says_how_long_chips_are_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "profile", "show", str(_profile(tmp_path, 180)))
    assert code == 0 and "evidence:    chips kept 180 days; rejected ones until" in out
    code, out, _ = run(capsys, "profile", "show", str(CONFIGS / "brick_kilns_s2.yaml"))
    assert code == 0 and "chips kept with no limit (no review.retain_evidence_days)" in out
    code, out, _ = run(capsys, "profile", "show", str(_profile(tmp_path, 180)), "--json")
    assert json.loads(out)["profile"]["review"]["retain_evidence_days"] == 180


def test_purge_as_a_supervisor_with_password(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("a long enough secret\n"))
    assert run(capsys, "users", "add", "pat", "--role", "supervisor", "--password-stdin",
               AS_ADMIN)[0] == 0  # fmt: skip
    monkeypatch.setattr("sys.stdin", io.StringIO("wrong password here\n"))
    code, _, err = run(capsys, "review", "purge", "--user", "pat", "--password-stdin")
    assert code == 2 and "wrong user name or password" in err
    assert len(list((tmp_path / "evidence").iterdir())) == 5
    monkeypatch.setattr("sys.stdin", io.StringIO("a long enough secret\n"))
    code, out, err = run(capsys, "review", "purge", "--user", "pat", "--password-stdin", "--json")
    assert code == 0, err
    assert json.loads(out)["files"] == 1
    with sqlite3.connect(db) as conn:
        actor, after = conn.execute(
            "SELECT actor, after FROM audit_log ORDER BY seq DESC LIMIT 1"
        ).fetchone()
    assert actor == "pat" and "local_override" not in json.loads(after)

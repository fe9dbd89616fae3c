"""``geoscreen review``, ``export``, ``audit verify`` and ``users`` end to end."""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
from pathlib import Path

import pytest

from geoscreen.cli import main
from geoscreen.review.testing import make_sites, pg_base_url, pg_schema

AS_ADMIN = "--as-admin-of-this-file"  # acting without the user's password (audited)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Path:
    """A SQLite store (via $GEOSCREEN_DB) with users and one loaded run of 12 sites."""
    path = tmp_path / "review.sqlite"
    monkeypatch.setenv("GEOSCREEN_DB", str(path))
    for name, role in [("ann", "analyst"), ("sue", "supervisor"), ("sam", "supervisor"),
                       ("vic", "viewer")]:  # fmt: skip
        assert run(capsys, "users", "add", name, "--role", role, AS_ADMIN)[0] == 0
    sites = make_sites(tmp_path / "sites.parquet", 12)
    code, out, err = run(capsys, "review", "load", str(sites), AS_ADMIN)
    assert code == 0, err
    assert out.startswith("run run-1: 12 sites matching profile brick_kilns_s2 (12 new, 0 seen")
    assert err == "loading: 12/12 sites\n"
    return path


def test_review_flow(db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "review", "load", str(tmp_path / "sites.parquet"), AS_ADMIN)
    assert (code, out) == (0, "run run-1 is already loaded: nothing changed\n")
    code, out, _ = run(capsys, "review", "list", "--limit", "3")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["ID", "STATUS", "SCORE", "VER", "LAST", "SEEN",
                                              "PROFILE", "/", "SITE"]  # fmt: skip
    assert (
        len(lines) == 5
        and lines[-1] == "3 of 12 candidates (each only matches a profile; people decide)"
    )
    listed = json.loads(run(capsys, "review", "list", "--json", "--limit", "0")[1])
    assert listed["total"] == 12 and len(listed["candidates"]) == 12
    top = listed["candidates"][0]["id"]
    assert run(capsys, "review", "set", str(top), "in_review", "--user", "ann", AS_ADMIN)[1] == (
        f"candidate {top}: in_review (version 2)\n"
    )
    code, out, _ = run(capsys, "review", "set", str(top), "confirmed", "--user", "ann", AS_ADMIN,
                       "--reason", "rows of kilns", "--expected-version", "2")  # fmt: skip
    assert (code, out) == (0, f"candidate {top}: confirmed (version 3)\n")
    assert (
        run(
            capsys,
            "review",
            "note",
            str(top),
            "ask partner for imagery",
            "--user",
            "ann",
            AS_ADMIN,
        )[0]
        == 0
    )
    code, out, _ = run(capsys, "review", "set", str(top), "escalated", "--user", "sue",
                       "--reason", "share", AS_ADMIN)  # fmt: skip
    assert code == 0
    code, out, _ = run(capsys, "review", "show", str(top))
    assert out.startswith(f"candidate {top}: matches profile brick_kilns_s2 v0.1.0 (site site-")
    assert "status:     escalated (version 4, by sue at" in out
    assert "trafficking" not in out.lower()
    history = run(capsys, "review", "history", str(top))[1].splitlines()
    assert [h.split(" ", 2)[2] for h in history] == [
        "ann: new -> in_review",
        "ann: in_review -> confirmed (rows of kilns)",
        "ann: note: ask partner for imagery",
        "sue: confirmed -> escalated (share)",
    ]
    shown = json.loads(run(capsys, "review", "show", str(top), "--json")[1])
    assert shown["status"] == "escalated" and len(shown["history"]) == 4
    assert shown["geometry"]["type"] == "Polygon"
    out_file = tmp_path / "partner.geojson"
    code, out, err = run(capsys, "export", "--redaction", "partner", "--min-m", "200", "--max-m",
                         "800", "--user", "sam", AS_ADMIN, "--out", str(out_file))  # fmt: skip
    assert code == 0, err
    digest = hashlib.sha256(out_file.read_bytes()).hexdigest()
    assert out.strip().endswith(f"sha256 {digest}") and "1 features (partner, geojson)" in out
    code, out, _ = run(capsys, "export", "--redaction", "public", "--grid-m", "200000",
                       "--min-count", "2", "--user", "sue", AS_ADMIN, "--out",
                       str(tmp_path / "p.csv"), "--json")  # fmt: skip
    assert json.loads(out)["redaction"] == "public"
    code, out, _ = run(capsys, "audit", "verify")
    assert code == 0 and out.startswith("ok: 11 entries, head 11 ")
    users = json.loads(run(capsys, "users", "list", "--json")[1])
    assert [u["name"] for u in users] == ["ann", "sam", "sue", "vic"]
    assert run(capsys, "users", "disable", "vic", AS_ADMIN)[1] == "user vic disabled\n"
    assert "vic                      viewer      disabled" in run(capsys, "users", "list")[1]


def test_readme_decision_on_a_new_candidate(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's 'review set 12 confirmed' works on a new candidate, in two recorded steps."""
    code, out, err = run(capsys, "review", "set", "12", "confirmed", "--reason",
                         "kiln chimney and clamp visible", "--user", "ann", AS_ADMIN)  # fmt: skip
    assert (code, out) == (0, "candidate 12: new -> in_review -> confirmed (version 3)\n"), err
    history = run(capsys, "review", "history", "12")[1].splitlines()
    assert [h.split(" ", 2)[2] for h in history] == [
        "ann: new -> in_review",
        "ann: in_review -> confirmed (kiln chimney and clamp visible)",
    ]
    code, _, err = run(capsys, "review", "set", "11", "confirmed", "--user", "ann", AS_ADMIN)
    assert code == 2 and "reason" in err  # still needs its reason; nothing changed
    assert json.loads(run(capsys, "review", "show", "11", "--json")[1])["status"] == "new"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["review", "show", "99"], "no candidate with id 99"),
        (["review", "set", "1", "done", "--user", "ann", AS_ADMIN], "unknown status 'done'"),
        (["review", "set", "1", "in_review", "--user", "vic", AS_ADMIN], "has the role viewer"),
        (["review", "set", "1", "in_review", "--user", "zed", AS_ADMIN], "no user named 'zed'"),
        (["review", "set", "1", "in_review", "--user", "ann", "--expected-version", "5", AS_ADMIN],
         "conflict: candidate 1 is at version 1"),
        (["review", "note", "1", "  ", "--user", "ann", AS_ADMIN], "a note needs some text"),
        (["review", "list", "--status", "open"], "unknown status 'open'"),
        (["review", "list", "--bbox", "1,2,3"], "not a bounding box"),
        (["export", "--user", "ann", "--out", "x.txt"], "cannot tell the format"),
        (["export", "--user", "vic", AS_ADMIN, "--out", "x.geojson"], "has the role viewer"),
        (["export", "--user", "sue", "--out", "x.kml", "--redaction", "partner", "--min-m", "9",
          "--max-m", "5"], "max_m (5) must be above min_m (9)"),
        (["users", "add", "kim", "--role", "boss", AS_ADMIN], "unknown role 'boss'"),
        (["review", "set", "1", "in_review", "--user", "ann"], "who must give a password"),
        (["review", "note", "1", "hi", "--user", "ann"], "who must give a password"),
        (["export", "--user", "sue", "--out", "x.geojson"], "who must give a password"),
    ],
)  # fmt: skip
def test_bad_input_one_line_exit_2_nothing_written(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], args: list[str], message: str,
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    before = _dump(db)
    code, out, err = run(capsys, *args)
    assert code == 2 and out == ""
    assert err.startswith("geoscreen: error: ") and message in err and err.count("\n") == 1
    assert _dump(db) == before
    assert not (tmp_path / "x.txt").exists() and not (tmp_path / "x.geojson").exists()


def test_reason_required(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "review", "set", "2", "in_review", "--user", "ann", AS_ADMIN)
    code, _, err = run(
        capsys,
        "review",
        "set",
        "2",
        "rejected",
        "--user",
        "ann",
        "--reason",
        " ",
        AS_ADMIN,
    )
    assert code == 2 and "give a reason. Use --reason TEXT" in err


def _dump(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return list(conn.iterdump())


def test_store_location_rules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GEOSCREEN_DB", raising=False)
    for args in (["review", "list"], ["audit", "verify"], ["users", "list"]):
        code, _, err = run(capsys, *args)
        assert code == 2 and "geoscreen.sqlite: no review store here" in err
    assert list(tmp_path.iterdir()) == []
    assert run(capsys, "users", "add", "ann", "--role", "analyst", AS_ADMIN)[0] == 0
    assert (tmp_path / "geoscreen.sqlite").is_file()  # the default, in the current folder
    foreign = tmp_path / "notes.sqlite"
    foreign.write_bytes(b"SQLite format 3\x00" + b"\x00" * 200)
    before = foreign.read_bytes()
    code, _, err = run(capsys, "users", "add", "bob", "--role", "analyst", "--db", str(foreign),
                       AS_ADMIN)  # fmt: skip
    assert code == 2 and "not a geoscreen review store" in err
    assert foreign.read_bytes() == before
    code, _, err = run(capsys, "review", "list", "--db", "postgresql://x@127.0.0.1:9/none")
    assert code == 2 and "connection" in err and err.count("\n") == 1


def test_password_from_stdin(db: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    from geoscreen.review.store import open_store
    from geoscreen.review.users import authenticate

    monkeypatch.setattr("sys.stdin", io.StringIO("a long enough secret\n"))
    code, out, _ = run(capsys, "users", "add", "lee", "--role", "admin", "--password-stdin",
                       AS_ADMIN)  # fmt: skip
    assert (code, out) == (0, "user lee added (admin, with password)\n")
    with open_store(db) as store:
        assert authenticate(store, "lee", "a long enough secret") is not None


def test_audit_verify_detects_tampering(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TRIGGER audit_log_no_update")
        conn.execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = 2")
    conn.close()
    code, out, err = run(capsys, "audit", "verify")
    assert code == 1 and out == ""
    assert "audit: entry 2: content does not match its hash (edited)" in err
    assert "TAMPERED: 1 problems in 5 entries" in err
    report = json.loads(run(capsys, "audit", "verify", "--json")[1])
    assert report["ok"] is False and report["entries"] == 5


@pytest.mark.skipif(pg_base_url() is None, reason="needs GEOSCREEN_TEST_PG_URL")
def test_postgres_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = pg_base_url()
    assert base is not None
    sites = make_sites(tmp_path / "s.parquet", 5)
    with pg_schema(base) as url:
        assert run(capsys, "review", "load", str(sites), "--db", url, "--json", AS_ADMIN)[0] == 0
        code, out, _ = run(capsys, "review", "list", "--db", url, "--json")
        assert code == 0 and json.loads(out)["total"] == 5
        assert run(capsys, "audit", "verify", "--db", url)[1].startswith("ok: 1 entries")


def test_decisions_need_the_users_password(
    db: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from geoscreen.review import audit
    from geoscreen.review.store import open_store

    monkeypatch.setattr("sys.stdin", io.StringIO("a long enough secret\n"))
    assert run(capsys, "users", "add", "lee", "--role", "supervisor", "--password-stdin",
               AS_ADMIN)[0] == 0  # fmt: skip
    before = _dump(db)
    for name, password in [("lee", "not the secret"), ("ann", "a long enough secret")]:
        monkeypatch.setattr("sys.stdin", io.StringIO(password + "\n"))
        code, _, err = run(capsys, "review", "set", "1", "in_review", "--user", name,
                           "--password-stdin")  # fmt: skip
        assert code == 2 and "wrong user name or password" in err and err.count("\n") == 1
        assert _dump(db) == before  # ann has no password: only the override would do
    monkeypatch.setattr("sys.stdin", io.StringIO("a long enough secret\n"))
    code, out, err = run(capsys, "review", "set", "1", "in_review", "--user", "lee",
                         "--password-stdin")  # fmt: skip
    assert (code, out) == (0, "candidate 1: in_review (version 2)\n"), err
    with open_store(db) as store:
        last = list(audit.entries(store))[-1]
    assert (last.actor, last.action) == ("lee", "status")
    assert "local_override" not in last.to_dict()["after"]


def test_the_local_override_is_on_record(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from geoscreen.review import audit
    from geoscreen.review.store import open_store
    from geoscreen.review.users import local_actor

    code, _, err = run(capsys, "review", "note", "2", "seen", "--user", "ann",
                       AS_ADMIN)  # fmt: skip
    assert code == 0, err
    with open_store(db) as store:
        last = list(audit.entries(store))[-1]
        assert audit.verify(store).ok
    assert (last.actor, last.action) == ("ann", "note")
    assert last.to_dict()["after"] == {"note": "seen", "local_override": local_actor()}


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["users", "add", "bad name!", "--role", "analyst", AS_ADMIN], "", "bad user name"),
        (["users", "add", "kim", "--role", "boss", AS_ADMIN], "", "unknown role 'boss'"),
        (["users", "add", "kim", "--role", "analyst", "--password-stdin", AS_ADMIN], "short\n",
         "password too short"),
        (["users", "add", "kim", "--role", "analyst"], "", "users add must say who acts"),
        (["users", "add", "kim", "--role", "analyst", "--user", "root"], "",
         "acts for root, who must give a password"),
        (["users", "add", "kim", "--role", "analyst", "--user", "root", "--admin-password-stdin"],
         "a long enough secret\n", "no review store here"),
    ],
)  # fmt: skip
def test_refused_users_add_creates_no_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    args: list[str], stdin: str, message: str,
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code, _, err = run(capsys, *args, "--db", str(tmp_path / "new.sqlite"))
    assert code == 2 and message in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_loading_an_objects_file_says_what_stayed_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A detection screen's objects.parquet: the objects below its recorded threshold are
    not queued, and the command says how many."""
    from geoscreen.sites.site import read_sites, write_sites

    monkeypatch.setenv("GEOSCREEN_DB", str(tmp_path / "objects.sqlite"))
    frame = read_sites(make_sites(tmp_path / "all.parquet", 12))
    frame["score_max"] = [0.05 * k for k in range(12)]  # 0.00 .. 0.55
    write_sites(frame.assign(threshold=0.3), tmp_path / "objects.parquet")
    code, out, err = run(capsys, "review", "load", str(tmp_path / "objects.parquet"), "--json",
                         AS_ADMIN)  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert (result["sites"], result["objects_below_threshold"]) == (6, 6)
    assert "6 objects scoring below the threshold in force when screened (0.3" in err

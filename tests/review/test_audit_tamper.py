"""Attacks on the audit log by someone with write access to the store, and what catches them.

Erasing the log, dropping its table, and changing candidates or review events without
an entry are caught by ``audit verify`` alone; cutting the log back or rewriting it with
recomputed hashes are caught with an anchor kept outside the store.
"""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from geoscreen.cli.app import main
from geoscreen.errors import ConfigError
from geoscreen.review import audit
from geoscreen.review.audit_check import read_anchor, write_anchor
from geoscreen.review.audit_key import ENV_KEY_FILE, entry_mac, load_key, make_key
from geoscreen.review.loader import load_sites
from geoscreen.review.schema import GENESIS_HASH
from geoscreen.review.store import Store
from geoscreen.review.testing import drop_guards
from geoscreen.review.workflow import add_note, set_status


@pytest.fixture
def reviewed(store: Store, sites: Callable[..., Path]) -> Store:
    load_sites(store, sites(5), actor="test")
    set_status(store, 1, "in_review", user="ann")
    set_status(store, 1, "confirmed", user="ann", reason="kiln rows")
    add_note(store, 2, "check the chimney", user="bob")
    audit.record_view(store, 1, user="vic")
    return store


def _raw(store: Store, *statements: str) -> None:
    """Run SQL on the store after dropping its guard triggers, as its owner could."""
    with store.write() as conn:
        drop_guards(conn)
        for statement in statements:
            conn.execute(text(statement))


def _cut_back(store: Store, to_seq: int) -> None:
    """Delete the entries after ``to_seq`` and point the head at it: a clean, shorter chain."""
    kept = next(e for e in audit.entries(store) if e.seq == to_seq)
    _raw(store, f"DELETE FROM audit_log WHERE seq > {to_seq}",
         f"UPDATE audit_head SET seq = {to_seq}, hash = '{kept.hash}'")  # fmt: skip


def test_an_erased_log_is_tampered(reviewed: Store) -> None:
    _raw(
        reviewed, "DELETE FROM audit_log", f"UPDATE audit_head SET seq = 0, hash = '{GENESIS_HASH}'"
    )
    report = audit.verify(reviewed)
    assert not report.ok and report.entries == 0
    assert "user ann has no audit entry (entries deleted, or the user added directly)" in (
        report.problems
    )
    assert any(p.startswith("run ") for p in report.problems)
    assert any(p.startswith("candidate 1: status confirmed") for p in report.problems)


def test_a_dropped_log_is_tampered_and_the_cli_says_so(
    reviewed: Store, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _raw(reviewed, "DROP TABLE audit_log")
    report = audit.verify(reviewed)
    assert not report.ok
    assert report.problems == ["table audit_log is missing (dropped)"]
    reviewed.close()
    assert main(["audit", "verify", "--db", db_url]) == 1
    err = capsys.readouterr().err
    assert "TAMPERED" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("statement", "refused", "problem"),
    [
        ("UPDATE candidates SET status = 'escalated' WHERE id = 3", True,
         "candidate 3: status escalated (version 1) is not what the audit log says (new, "
         "version 1): changed directly"),
        ("UPDATE review_events SET user_name = 'sue' WHERE kind = 'note'", True,
         "candidate 2: its review events differ from the audited history"),
        ("DELETE FROM review_events WHERE to_status = 'in_review'", True,
         "candidate 1: its review events differ from the audited history"),
        ("UPDATE users SET role = 'supervisor' WHERE name = 'vic'", True,
         "user vic: role changed without an audit entry"),
        ("UPDATE users SET active = false WHERE name = 'bob'", False,
         "user bob: active changed without an audit entry"),
        ("INSERT INTO users (name, role, active, created_at) "
         "VALUES ('mallory', 'supervisor', true, '2026-01-01')", False,
         "user mallory has no audit entry (entries deleted, or the user added directly)"),
    ],
)  # fmt: skip
def test_changes_without_an_entry_are_tampering(
    reviewed: Store, statement: str, refused: bool, problem: str
) -> None:
    """The store's guards refuse what they can; its owner can drop them, and then
    ``audit verify`` finds the change."""
    if refused:
        with pytest.raises(DBAPIError), reviewed.write() as conn:
            conn.execute(text(statement))
        assert audit.verify(reviewed).ok
        _raw(reviewed, statement)
    else:
        with reviewed.write() as conn:
            conn.execute(text(statement))
    assert audit.verify(reviewed).problems == [problem]


def test_an_anchor_catches_a_log_cut_back(reviewed: Store, tmp_path: Path) -> None:
    anchored = write_anchor(audit.anchor(reviewed), tmp_path / "head.json")
    _cut_back(reviewed, 10)  # drops the view: nothing else in the store accounts for it
    assert audit.verify(reviewed).ok  # a clean, shorter chain: only the anchor can tell
    problems = audit.verify(reviewed, [read_anchor(anchored)]).problems
    assert len(problems) == 1
    assert problems[0].endswith("the log ends at entry 10, before the anchored entry (cut back)")


def test_an_anchor_catches_a_rewritten_log(reviewed: Store, tmp_path: Path) -> None:
    anchored = read_anchor(write_anchor(audit.anchor(reviewed), tmp_path / "head.json"))
    last = list(audit.entries(reviewed))[-1]
    forged = {**last.__dict__, "actor": "sue"}  # the view was someone else's, hash recomputed
    digest = audit.entry_hash(last.prev_hash, forged)
    _raw(reviewed, f"UPDATE audit_log SET actor = 'sue', hash = '{digest}' WHERE seq = {last.seq}",
         f"UPDATE audit_head SET hash = '{digest}'")  # fmt: skip
    assert audit.verify(reviewed).ok
    problems = audit.verify(reviewed, [anchored]).problems
    assert problems == [
        f"anchor of entry {last.seq} ({anchored.at}): the entry's hash differs from the anchored "
        "one (history rewritten)"
    ]


def test_a_log_that_grew_after_its_anchor_is_fine(reviewed: Store, tmp_path: Path) -> None:
    first = read_anchor(write_anchor(audit.anchor(reviewed), tmp_path / "1.json"))
    set_status(reviewed, 2, "in_review", user="bob")
    second = audit.anchor(reviewed)
    add_note(reviewed, 3, "more", user="ann")
    report = audit.verify(reviewed, [first, second])
    assert report.ok, report.problems
    assert second.seq == first.seq + 1


def test_anchor_and_verify_from_the_cli(
    reviewed: Store, db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "anchor.json"
    assert main(["audit", "anchor", "--db", db_url, "--out", str(out)]) == 0
    assert main(["audit", "anchor", "--db", db_url, "--out", str(out)]) == 2  # exists
    assert "--overwrite" in capsys.readouterr().err
    assert main(["audit", "verify", "--db", db_url, "--anchor", str(out)]) == 0
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert main(["audit", "verify", "--db", db_url, "--anchor", str(bad)]) == 2
    assert "not an audit anchor" in capsys.readouterr().err
    _cut_back(reviewed, 10)
    assert main(["audit", "verify", "--db", db_url]) == 0
    assert main(["audit", "verify", "--db", db_url, "--anchor", str(out)]) == 1
    assert "cut back" in capsys.readouterr().err


# -- entries keyed with a secret outside the store ---------------------------------------------


@pytest.fixture
def key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "keys").mkdir()
    path = make_key(tmp_path / "keys" / "audit.key")
    monkeypatch.setenv(ENV_KEY_FILE, str(path))
    return path


def _forge_next(store: Store, mac: str | None = None) -> int:
    """Append an entry with a correct hash, as someone with the store but not the key would."""
    last = list(audit.entries(store))[-1]
    fields = {**last.__dict__, "seq": last.seq + 1, "actor": "sue", "action": "login",
              "entity": "user", "entity_id": "sue", "before": None, "after": None,
              "profile": None, "profile_version": None, "model_sha256": None}  # fmt: skip
    digest = audit.entry_hash(last.hash, fields)
    value = "NULL" if mac is None else f"'{mac}'"
    _raw(store,
         "INSERT INTO audit_log (seq, at, actor, action, entity, entity_id, prev_hash, hash, mac) "
         f"VALUES ({fields['seq']}, '{fields['at']}', 'sue', 'login', 'user', 'sue', "
         f"'{last.hash}', '{digest}', {value})",
         f"UPDATE audit_head SET seq = {fields['seq']}, hash = '{digest}'")  # fmt: skip
    return int(fields["seq"])


def test_keyed_entries_verify_with_the_key_only(
    key_file: Path, store: Store, sites: Callable[..., Path]
) -> None:
    load_sites(store, sites(3), actor="test")
    set_status(store, 1, "in_review", user="ann")
    entries = list(audit.entries(store))
    assert all(e.mac == entry_mac(load_key(key_file), e.hash) for e in entries)
    report = audit.verify(store, key=load_key(key_file))
    assert report.ok and report.macs_checked and report.keyed_from == 1
    other = bytes(32)
    assert audit.verify(store, key=other).problems[0] == (
        "entry 1: MAC does not match (forged, or keyed with another key)"
    )


def test_a_forged_entry_with_a_correct_hash_fails_with_the_key(
    key_file: Path, store: Store, sites: Callable[..., Path]
) -> None:
    load_sites(store, sites(3), actor="test")
    key = load_key(key_file)
    seq = _forge_next(store)
    assert audit.verify(store).ok  # without the key the chain alone cannot tell
    assert audit.verify(store, key=key).problems == [
        f"entry {seq}: no MAC after keyed entries (added without the key)"
    ]
    seq = _forge_next(store, mac="ab" * 32)
    assert f"entry {seq}: MAC does not match (forged, or keyed with another key)" in (
        audit.verify(store, key=key).problems
    )


def test_entries_before_the_key_stay_valid(
    store: Store, sites: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_sites(store, sites(3), actor="test")  # no key yet: an existing store
    unkeyed = len(list(audit.entries(store)))
    key = make_key(tmp_path / "audit.key")
    monkeypatch.setenv(ENV_KEY_FILE, str(key))
    set_status(store, 1, "in_review", user="ann")
    report = audit.verify(store, key=load_key(key))
    assert report.ok and report.keyed_from == unkeyed + 1


def test_an_anchor_catches_removed_macs(key_file: Path, store: Store,
                                         sites: Callable[..., Path]) -> None:  # fmt: skip
    load_sites(store, sites(3), actor="test")
    anchored = audit.anchor(store)
    assert anchored.keyed_from == 1
    _raw(store, "UPDATE audit_log SET mac = NULL")  # then forged entries need no MAC
    _forge_next(store)
    assert audit.verify(store, key=load_key(key_file)).ok  # nothing keyed is left to compare
    assert audit.verify(store, [anchored]).problems == [
        f"anchor of entry {anchored.seq} ({anchored.at}): entries were keyed from entry 1 on, "
        "but their MACs were removed"
    ]


def test_key_files_are_private_and_checked(
    tmp_path: Path, db_url: str, store: Store, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    out = tmp_path / "k.key"
    assert main(["audit", "keygen", "--out", str(out)]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert main(["audit", "keygen", "--out", str(out)]) == 2  # never replaces a key
    out.chmod(0o644)
    with pytest.raises(ConfigError, match="can be read by others"):
        load_key(out)
    monkeypatch.setenv(ENV_KEY_FILE, str(out))
    capsys.readouterr()
    store.close()
    assert main(["audit", "verify", "--db", db_url]) == 2
    err = capsys.readouterr().err
    assert "chmod 600" in err and "Traceback" not in err
    out.chmod(0o600)
    assert main(["audit", "verify", "--db", db_url]) == 0

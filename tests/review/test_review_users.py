"""Users: roles, argon2 password hashes, disabling; every change is audited."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from geoscreen.errors import ConfigError
from geoscreen.review import audit
from geoscreen.review.schema import users
from geoscreen.review.store import Store
from geoscreen.review.users import add_user, authenticate, list_users, set_active, set_password


def test_users_and_passwords(store: Store) -> None:
    user = add_user(store, "lee", "analyst", password="correct horse battery", actor="ada")
    assert (user.name, user.role, user.active) == ("lee", "analyst", True)
    with store.read() as conn:
        stored = conn.execute(select(users.c.password_hash).where(users.c.name == "lee")).scalar()
    assert stored.startswith("$argon2id$") and "correct horse" not in stored
    assert authenticate(store, "lee", "correct horse battery") == user
    assert authenticate(store, "lee", "wrong password!") is None
    assert authenticate(store, "nobody", "correct horse battery") is None
    assert authenticate(store, "ann", "anything at all") is None  # no password: CLI only
    set_password(store, "lee", "another long secret", actor="ada")
    assert authenticate(store, "lee", "correct horse battery") is None
    assert authenticate(store, "lee", "another long secret") is not None
    set_active(store, "lee", False, actor="ada")
    assert authenticate(store, "lee", "another long secret") is None
    assert [u.name for u in list_users(store)] == ["ada", "ann", "bob", "lee", "sam", "sue", "vic"]
    actions = [(e.action, e.actor) for e in audit.entries(store, entity="user", entity_id="lee")]
    assert actions == [("user_add", "ada"), ("user_password", "ada"), ("user_disable", "ada")]
    assert "argon2" not in str([e.to_dict() for e in audit.entries(store)])


@pytest.mark.parametrize(
    ("name", "role", "password", "message"),
    [
        ("ann", "analyst", None, "exists already"),
        ("x y", "analyst", None, "bad user name"),
        ("kim", "boss", None, "unknown role 'boss'"),
        ("kim", "viewer", "short", "password too short"),
    ],
)
def test_bad_users(store: Store, name: str, role: str, password: str | None, message: str) -> None:
    before = len(list(audit.entries(store)))
    with pytest.raises(ConfigError, match=message):
        add_user(store, name, role, password=password)
    assert len(list(audit.entries(store))) == before

"""A governance store made before trials were outputs upgrades in place: its outputs stay
as they were, a trial's estimate can then be stored, and an unknown kind is still refused."""

from __future__ import annotations

import sqlite3

import pytest

from governance import store


def test_a_store_from_before_trials_keeps_its_outputs_and_accepts_a_trial(tmp_path):
    path = tmp_path / "governance.sqlite3"
    # the schema as the release of the hub before trials left it
    old = store.MIGRATIONS[: next(i for i, m in enumerate(store.MIGRATIONS) if "'trial'" in m)]
    con = sqlite3.connect(path, isolation_level=None)
    for number, script in enumerate(old, start=1):
        con.executescript(f"BEGIN; {script}; PRAGMA user_version = {number}; COMMIT;")
    row = ("o-1", "p-1", "m-1", "mo", "r1", "pending", "{}", "{}", "sig", "2026-01-01")
    columns = "output_id, project_id, query_id, author, release, status, result, manifest, "
    columns += "signature, created_at, kind"
    con.execute(f"INSERT INTO outputs ({columns}) VALUES (?,?,?,?,?,?,?,?,?,?, 'model')", row)
    with pytest.raises(sqlite3.IntegrityError):
        con.execute(
            f"INSERT INTO outputs ({columns}) VALUES (?,?,?,?,?,?,?,?,?,?, 'trial')",
            ("o-2", *row[1:]),
        )
    con.close()

    upgraded = store.Store(path).connect()
    assert upgraded.execute("PRAGMA user_version").fetchone()[0] == len(store.MIGRATIONS)
    assert [tuple(r) for r in upgraded.execute("SELECT kind FROM outputs")] == [("model",)]
    upgraded.execute(
        f"INSERT INTO outputs ({columns}) VALUES (?,?,?,?,?,?,?,?,?,?, 'trial')", ("o-2", *row[1:])
    )
    with pytest.raises(sqlite3.IntegrityError):
        upgraded.execute(
            f"INSERT INTO outputs ({columns}) VALUES (?,?,?,?,?,?,?,?,?,?, 'poem')",
            ("o-3", *row[1:]),
        )
    assert upgraded.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_store_from_before_data_controllers_keeps_its_users_and_keys(tmp_path):
    path = tmp_path / "governance.sqlite3"
    before = next(i for i, m in enumerate(store.MIGRATIONS) if "users_new" in m)
    con = sqlite3.connect(path, isolation_level=None)
    for number, script in enumerate(store.MIGRATIONS[:before], start=1):
        con.executescript(f"BEGIN; {script}; PRAGMA user_version = {number}; COMMIT;")
    con.execute(
        "INSERT INTO users VALUES ('ana', 'Ana', 'researcher', 'UoB', 'university', "
        "'2100-01-01', '2026-01-01', 1)"
    )
    con.execute("INSERT INTO api_keys VALUES ('k1', 'ana', 'abc', '2026-01-01', NULL)")
    with pytest.raises(sqlite3.IntegrityError):  # no controller role yet
        con.execute(
            "INSERT INTO users VALUES ('dc', 'DC', 'controller', 'Trust', 'nhs_trust', "
            "'2100-01-01', '2026-01-01', 1)"
        )
    con.close()

    upgraded = store.Store(path).connect()
    assert [tuple(r) for r in upgraded.execute("SELECT user_id, role FROM users")] == [
        ("ana", "researcher")
    ]
    # the key still refers to its user, and references are checked again after the rebuild
    assert upgraded.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert upgraded.execute("PRAGMA foreign_key_check").fetchall() == []
    assert [tuple(r) for r in upgraded.execute("SELECT key_id, user_id FROM api_keys")] == [
        ("k1", "ana")
    ]
    upgraded.execute(
        "INSERT INTO users VALUES ('dc', 'DC', 'controller', 'Trust', 'nhs_trust', "
        "'2100-01-01', '2026-01-01', 1)"
    )
    with pytest.raises(sqlite3.IntegrityError):  # a key for nobody is still refused
        upgraded.execute("INSERT INTO api_keys VALUES ('k2', 'nobody', 'x', 'now', NULL)")

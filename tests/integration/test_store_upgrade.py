"""A governance store made before trials were outputs upgrades in place: its outputs stay
as they were, a trial's estimate can then be stored, and an unknown kind is still refused."""

from __future__ import annotations

import sqlite3

import pytest

from governance import store


def test_a_store_from_before_trials_keeps_its_outputs_and_accepts_a_trial(tmp_path):
    path = tmp_path / "governance.sqlite3"
    old = store.MIGRATIONS[:-1]  # the schema as the previous release of the hub left it
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

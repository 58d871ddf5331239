"""Steward sessions shared by the worker processes of one `hub serve`."""

from __future__ import annotations

import secrets

from hub.steward.sessions import SharedSessionStore


def test_workers_with_the_same_secret_see_each_others_sessions_and_messages(tmp_path):
    secret = secrets.token_bytes(32)
    one = SharedSessionStore(tmp_path / "s.sqlite", secret)
    two = SharedSessionStore(tmp_path / "s.sqlite", secret)  # another worker
    token, session = one.new(user_id="sam", key="hub_abc_secretvalue")
    seen = two.get(token)
    assert seen is not None and seen.user_id == "sam" and seen.csrf == session.csrf
    seen.flash("ok", "Approved p-1.")
    assert one.get(token).take_flashes() == [("ok", "Approved p-1.")]  # type: ignore[union-attr]
    assert two.get(token).take_flashes() == []  # type: ignore[union-attr]
    two.drop(token)
    assert one.get(token) is None and len(one) == 0


def test_the_key_never_reaches_the_disk_and_a_restart_signs_everyone_out(tmp_path):
    path = tmp_path / "s.sqlite"
    store = SharedSessionStore(path, secrets.token_bytes(32))
    token, _ = store.new(user_id="sam", key="hub_abc_secretvalue")
    on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert b"secretvalue" not in on_disk and token.encode() not in on_disk
    restarted = SharedSessionStore(path, secrets.token_bytes(32))  # a new secret
    assert restarted.get(token) is None and store.get(token) is None  # and it is dropped


def test_sessions_end_when_idle_or_too_old_across_workers(tmp_path):
    now = [1000.0]
    secret = secrets.token_bytes(32)
    store = SharedSessionStore(
        tmp_path / "s.sqlite", secret, idle_s=60, max_s=300, clock=lambda: now[0]
    )
    token, _ = store.new(user_id="sam", key="k")
    for _ in range(4):
        now[0] += 59
        assert store.get(token) is not None  # each request keeps it alive...
    now[0] += 61
    assert store.get(token) is None  # ...until a minute passes without one
    token, _ = store.new(user_id="sam", key="k")
    for _ in range(6):
        now[0] += 55
        alive = store.get(token)
    assert alive is None  # an hour-long limit (here 300 s) ends it whatever happens

"""One way to build a hub home for tests and benchmarks: releases, people, a project.

home = tmp_path / "hub"
publish(population, home)                              # the real release
gov = Governance.open(home, create_keys=True)
who = add_people(gov, ana="researcher", sam="steward")  # name -> Principal
pid = approved_project(gov, who["ana"], who["sam"], GRANTS, epsilon=3.0)
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from connectors.ingest import IngestResult, ingest
from connectors.secrets import resolve_keys
from governance.access.people import Principal
from governance.facade import Governance


def publish(source: Path, home: Path, *, fmt: str = "native") -> IngestResult:
    """Ingest ``source`` into a new release of ``home`` (keys created on first use)."""
    return ingest(source, fmt=fmt, home=home, keys=resolve_keys(home, create=True))


def add_people(
    gov: Governance,
    *,
    days: int = 30,
    organisation: str = "UoB",
    keys_to: Path | None = None,
    **roles: str,
) -> dict[str, Principal]:
    """Users with the given roles (``ana="researcher"``), authenticated by their keys;
    with ``keys_to``, each key is also written to ``<keys_to>/<user>.key`` (for the CLI's
    ``--key-file`` and HTTP clients)."""
    who = {}
    for user_id, role in roles.items():
        _, key = gov.people.add(
            user_id=user_id,
            name=user_id,
            role=role,
            organisation=organisation,
            organisation_type="university",
            accreditation_expires=dt.date.today() + dt.timedelta(days=days),
            actor="cli:test",
        )
        if keys_to is not None:
            (keys_to / f"{user_id}.key").write_text(key + "\n")
        who[user_id] = gov.people.authenticate(key)
    return who


def approved_project(
    gov: Governance,
    researcher: Principal,
    steward: Principal,
    grants: dict[str, list[str]],
    *,
    epsilon: float = 3.0,
    delta: float = 1e-6,
    title: str = "t",
    members: list[str] | None = None,
    **approval: Any,
) -> str:
    """A project requested by ``researcher`` and approved by ``steward``; its id."""
    project = gov.projects.request(
        requester=researcher.user, title=title, purpose="p", lay_summary="l", grants=grants,
        days=30, members=members or [],
    )  # fmt: skip
    gov.projects.approve(
        project.project_id, steward=steward.user, epsilon=epsilon, delta=delta, **approval
    )
    return project.project_id


def heaviest_person(con: Any) -> tuple[list[str], Any]:
    """A release's person-linked tables, and the person with the most rows across them
    (the neighbour tests' hardest case to remove), read on a cursor of the release."""
    tables = [
        r[0]
        for r in con.execute(
            "SELECT DISTINCT table_name FROM duckdb_columns() WHERE column_name = 'person_id' "
            "AND table_name IN (SELECT table_name FROM duckdb_tables())"
        ).fetchall()
    ]
    counts = " UNION ALL ".join(f"SELECT person_id FROM {t}" for t in tables)
    return tables, con.execute(
        f"SELECT person_id FROM ({counts}) GROUP BY person_id ORDER BY count(*) DESC LIMIT 1"
    ).fetchall()[0][0]

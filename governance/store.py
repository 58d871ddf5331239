"""The governance store: one SQLite database in WAL mode under ``$HUB_HOME/governance``.

Why SQLite: it is embedded (no server to run), transactional, and safe for several
processes at once (the admin CLI works while the server runs): ``BEGIN IMMEDIATE``
takes the database's write lock, so read-check-write sequences such as a budget spend
are atomic across threads and processes. With ``synchronous=FULL`` every commit is
fsynced before it returns, so an acknowledged audit entry survives a crash. Reads go on
while one writer commits (WAL). Within one process, writers queue on a mutex before they
ask SQLite for its lock: a thread waiting for the mutex sleeps until it is its turn,
instead of polling ``BEGIN IMMEDIATE`` and taking the interpreter from the thread that
holds the lock and needs it to finish.

Schema changes are numbered migrations applied on open.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Final

from governance.errors import AuditUnavailable

MIGRATIONS: Final = (
    """
    CREATE TABLE users (
        user_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('researcher', 'steward', 'modeller', 'admin')),
        organisation TEXT NOT NULL,
        organisation_type TEXT NOT NULL,
        accreditation_expires TEXT NOT NULL,
        created_at TEXT NOT NULL,
        active INTEGER NOT NULL DEFAULT 1
    );
    CREATE TABLE api_keys (
        key_id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users(user_id),
        secret_sha256 TEXT NOT NULL,
        created_at TEXT NOT NULL,
        revoked_at TEXT
    );
    CREATE TABLE projects (
        project_id TEXT PRIMARY KEY,
        title TEXT NOT NULL,
        purpose TEXT NOT NULL,
        lay_summary TEXT NOT NULL,
        organisation TEXT NOT NULL,
        requested_by TEXT NOT NULL REFERENCES users(user_id),
        requested_grants TEXT NOT NULL,
        requested_days INTEGER NOT NULL,
        status TEXT NOT NULL,
        granted TEXT,
        expires_at TEXT,
        epsilon_total REAL,
        delta_total REAL,
        sdc_threshold INTEGER,
        sdc_rounding INTEGER,
        decided_by TEXT,
        decision_reason TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE project_members (
        project_id TEXT NOT NULL REFERENCES projects(project_id),
        user_id TEXT NOT NULL REFERENCES users(user_id),
        can_train INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (project_id, user_id)
    );
    CREATE TABLE budget_spends (
        spend_id INTEGER PRIMARY KEY,
        project_id TEXT NOT NULL REFERENCES projects(project_id),
        state TEXT NOT NULL CHECK (state IN ('reserved', 'committed', 'refunded')),
        epsilon REAL NOT NULL,
        delta REAL NOT NULL,
        purpose TEXT NOT NULL,
        actor TEXT NOT NULL,
        created_at TEXT NOT NULL,
        settled_at TEXT
    );
    CREATE INDEX budget_spends_project ON budget_spends(project_id, state);
    CREATE TABLE audit_entries (
        seq INTEGER PRIMARY KEY,
        body TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL,
        time TEXT NOT NULL,
        actor TEXT,
        role TEXT,
        project TEXT,
        action TEXT NOT NULL,
        decision TEXT NOT NULL
    );
    CREATE INDEX audit_by_project ON audit_entries(project, seq);
    CREATE INDEX audit_by_actor ON audit_entries(actor, seq);
    CREATE TABLE audit_checkpoints (
        seq INTEGER PRIMARY KEY,
        head_hash TEXT NOT NULL,
        signature TEXT NOT NULL,
        signed_at TEXT NOT NULL
    );
    CREATE TABLE audit_head (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        seq INTEGER NOT NULL,
        head_hash TEXT NOT NULL,
        signature TEXT NOT NULL
    );
    """,
    # governed queries and exact outputs (governance/queries.py)
    """
    CREATE TABLE queries (
        query_id TEXT PRIMARY KEY, project_id TEXT NOT NULL, user_id TEXT NOT NULL,
        sql TEXT NOT NULL, sql_sha256 TEXT NOT NULL, target TEXT NOT NULL, mode TEXT,
        release TEXT NOT NULL, status TEXT NOT NULL, epsilon REAL, result TEXT,
        output_id TEXT, created_at TEXT NOT NULL
    );
    CREATE TABLE outputs (
        output_id TEXT PRIMARY KEY, project_id TEXT NOT NULL, query_id TEXT NOT NULL,
        author TEXT NOT NULL, release TEXT NOT NULL, status TEXT NOT NULL,
        result TEXT NOT NULL, manifest TEXT NOT NULL, signature TEXT NOT NULL,
        created_at TEXT NOT NULL, reviewed_by TEXT, review_reason TEXT, reviewed_at TEXT
    );
    """,
    # models as outputs: a trained model leaves the hub only after a steward's review
    """
    ALTER TABLE outputs ADD COLUMN kind TEXT NOT NULL DEFAULT 'table'
        CHECK (kind IN ('table', 'model'));
    """,
    # a counter bumped to prove the store takes a durable write (AuditLog.ensure_writable)
    """
    CREATE TABLE store_probe (id INTEGER PRIMARY KEY CHECK (id = 1), writes INTEGER NOT NULL);
    """,
    # output review: every reviewer's decision, and how many a project's outputs need
    """
    CREATE TABLE output_reviews (
        output_id TEXT NOT NULL REFERENCES outputs(output_id), reviewer TEXT NOT NULL,
        decision TEXT NOT NULL CHECK (decision IN ('approve', 'reject', 'return')),
        reason TEXT, created_at TEXT NOT NULL, PRIMARY KEY (output_id, reviewer)
    );
    ALTER TABLE projects ADD COLUMN output_reviewers INTEGER NOT NULL DEFAULT 1
        CHECK (output_reviewers IN (1, 2));
    """,
    # data controllers: a role of its own (SQLite changes a CHECK by rebuilding the table,
    # its documented ALTER procedure; _migrate turns foreign keys off around it), and each
    # project's sources with the decision of the organisation that controls each
    """
    CREATE TABLE users_new (
        user_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        role TEXT NOT NULL
            CHECK (role IN ('researcher', 'steward', 'modeller', 'admin', 'controller')),
        organisation TEXT NOT NULL,
        organisation_type TEXT NOT NULL,
        accreditation_expires TEXT NOT NULL,
        created_at TEXT NOT NULL,
        active INTEGER NOT NULL DEFAULT 1
    );
    INSERT INTO users_new SELECT * FROM users;
    DROP TABLE users;
    ALTER TABLE users_new RENAME TO users;
    CREATE TABLE project_sources (
        project_id TEXT NOT NULL REFERENCES projects(project_id),
        source TEXT NOT NULL,
        organisation TEXT NOT NULL,
        controller TEXT NOT NULL,
        status TEXT NOT NULL
            CHECK (status IN ('pending', 'approved', 'refused', 'withdrawn', 'removed')),
        decided_by TEXT,
        reason TEXT,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (project_id, source)
    );
    """,
    # the access policy's terms of a project (governance/access/commercial.py), and
    # feasibility runs with the spec they answered (governance/feasibility)
    """
    CREATE TABLE project_terms (
        project_id TEXT PRIMARY KEY REFERENCES projects(project_id),
        organisation_type TEXT NOT NULL, public_benefit TEXT, daa_reference TEXT,
        daa_expires TEXT
    );
    CREATE TABLE feasibility_runs (
        run_id TEXT PRIMARY KEY, project_id TEXT NOT NULL REFERENCES projects(project_id),
        user_id TEXT NOT NULL, spec TEXT NOT NULL, spec_sha256 TEXT NOT NULL,
        release TEXT NOT NULL, status TEXT NOT NULL, epsilon REAL NOT NULL,
        result TEXT NOT NULL, created_at TEXT NOT NULL
    );
    CREATE INDEX feasibility_by_project ON feasibility_runs(project_id, created_at);
    """,
    # DP synthetic datasets (models/synthetic.py) and emulated trials' estimates
    # (models/trial.py) as outputs: SQLite cannot widen a CHECK,
    # so the table is rebuilt (foreign keys are off while migrations run, see _migrate)
    """
    CREATE TABLE outputs_new (
        output_id TEXT PRIMARY KEY, project_id TEXT NOT NULL, query_id TEXT NOT NULL,
        author TEXT NOT NULL, release TEXT NOT NULL, status TEXT NOT NULL,
        result TEXT NOT NULL, manifest TEXT NOT NULL, signature TEXT NOT NULL,
        created_at TEXT NOT NULL, reviewed_by TEXT, review_reason TEXT, reviewed_at TEXT,
        kind TEXT NOT NULL DEFAULT 'table'
            CHECK (kind IN ('table', 'model', 'synthetic', 'trial'))
    );
    INSERT INTO outputs_new SELECT output_id, project_id, query_id, author, release, status,
        result, manifest, signature, created_at, reviewed_by, review_reason, reviewed_at, kind
        FROM outputs;
    DROP TABLE outputs;
    ALTER TABLE outputs_new RENAME TO outputs;
    CREATE INDEX outputs_by_kind ON outputs(kind, status);
    """,
    # the review queue (outputs by status) and a project's outputs (the disclosure
    # ledger's check) found by index: a scan of every output ever stored grew with history
    """
    CREATE INDEX outputs_by_status ON outputs(status, created_at, output_id);
    CREATE INDEX outputs_by_project ON outputs(project_id);
    """,
)


LOCK_TIMEOUT_S: Final = 30.0


class Store:
    """Connections to the governance database; one per thread or process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._writer = threading.Lock()  # this process's writers, one at a time
        path.parent.mkdir(parents=True, exist_ok=True)
        con = self.connect()
        try:
            self._migrate(con)
        finally:
            con.close()

    @classmethod
    def for_home(cls, home: Path) -> Store:
        return cls(home / "governance" / "governance.sqlite3")

    def connect(self) -> sqlite3.Connection:
        try:
            con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            con.row_factory = sqlite3.Row
            con.execute("PRAGMA journal_mode = WAL")
            con.execute("PRAGMA synchronous = FULL")
            con.execute("PRAGMA foreign_keys = ON")
            # readers and schema work wait on SQLite's handler; writers use _begin's loop
            con.execute("PRAGMA busy_timeout = 30000")
        except sqlite3.OperationalError as exc:
            raise AuditUnavailable(f"the governance store cannot be opened ({exc})") from None
        return con

    def cached(self) -> sqlite3.Connection:
        """This thread's connection (opening one per operation costs more than the write)."""
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if con is None or getattr(self._local, "pid", None) != os.getpid():
            con = self.connect()
            con.execute("PRAGMA busy_timeout = 0")  # _begin retries with short sleeps
            self._local.con = con
            self._local.pid = os.getpid()
        return con

    def _drop_cached(self) -> None:
        con = getattr(self._local, "con", None)
        if con is not None:
            with suppress(sqlite3.Error):
                con.close()
        self._local.con = None

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """A write transaction holding the database's write lock from its start.

        Committed (and fsynced) when the block ends; rolled back on any exception. A
        store that cannot be written raises ``AuditUnavailable``.

        ``durable=False`` commits without the fsync (``synchronous=NORMAL``), for a write
        whose caller commits a durable transaction before it answers anyone (a budget
        reservation before the answer's commit, the write probe before the query's
        entry): the log is one sequence, so that later fsync makes this write durable
        too, before any response. A killed process loses neither (the operating system
        holds the write); a power cut before the later commit loses both, and nobody
        was answered. Atomicity and the order of writes are the same either way.
        """
        con = self.cached()
        if not self._writer.acquire(timeout=LOCK_TIMEOUT_S):
            raise AuditUnavailable("the governance store cannot be written (its lock is held)")
        try:
            if not durable:
                con.execute("PRAGMA synchronous = NORMAL")
            self._begin(con)
            self._local.after = []
            try:
                yield con
            except BaseException:
                self._local.after = []
                with suppress(sqlite3.Error):
                    con.execute("ROLLBACK")
                raise
            try:
                con.execute("COMMIT")
            except sqlite3.Error as exc:
                self._local.after = []
                with suppress(sqlite3.Error):
                    con.execute("ROLLBACK")
                self._drop_cached()
                raise AuditUnavailable(f"the governance store cannot be written ({exc})") from None
        finally:
            if not durable:
                with suppress(sqlite3.Error):
                    con.execute("PRAGMA synchronous = FULL")
            self._writer.release()
        callbacks, self._local.after = self._local.after, []
        for callback in callbacks:
            callback()

    def after_commit(self, con: sqlite3.Connection, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the current transaction on ``con`` has committed."""
        if con is getattr(self._local, "con", None) and con.in_transaction:
            self._local.after.append(callback)
        else:  # not one of this store's transactions: the caller commits on its own
            callback()

    def _begin(self, con: sqlite3.Connection) -> None:
        """Take the write lock, retrying briefly while another writer holds it.

        SQLite's own busy handler sleeps up to 100 ms between tries, which wastes most
        of the time under many writers; short sleeps keep the lock busy instead.
        """
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        pause = 0.0002
        while True:
            try:
                con.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    self._drop_cached()
                    raise AuditUnavailable(
                        f"the governance store cannot be written ({exc})"
                    ) from None
                time.sleep(pause)
                pause = min(pause * 1.5, 0.005)
            except sqlite3.Error as exc:
                self._drop_cached()
                raise AuditUnavailable(f"the governance store cannot be written ({exc})") from None

    def _migrate(self, con: sqlite3.Connection) -> None:
        version = con.execute("PRAGMA user_version").fetchone()[0]
        if version >= len(MIGRATIONS):
            return
        # a table rebuild (SQLite's documented way to change a constraint) drops and
        # renames a table others refer to: foreign keys are off while migrations run,
        # and checked before they are turned back on
        con.execute("PRAGMA foreign_keys = OFF")
        try:
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                con.executescript(
                    f"BEGIN IMMEDIATE; {script}; PRAGMA user_version = {number}; COMMIT;"
                )
            broken = con.execute("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise AuditUnavailable(
                    f"the governance store's migration broke {len(broken)} references"
                )
        finally:
            con.execute("PRAGMA foreign_keys = ON")

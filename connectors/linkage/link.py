"""Link a batch of feed records to persons: known records, NHS number, then Splink.

1. **Known**: a record key the person index already holds keeps its person.
2. **Deterministic**: a record with a valid NHS number (Modulus 11) joins the person
   that NHS number belongs to, or starts a new person if the number is new. Every
   single-digit error and adjacent transposition fails Modulus 11, so a mistyped number
   never links deterministically: it falls to step 3.
3. **Probabilistic** (Fellegi-Sunter, with Splink): the remaining records are compared
   with every known identity that shares a blocking key (date of birth; surname and
   forename; postcode and sex; surname and year of birth) on forename, surname (Jaro-
   Winkler levels), date of birth (exact, one edit, a month, a year), sex and postcode
   (full, sector, district). The model's u probabilities are estimated on random pairs
   and its m probabilities on the record pairs that share a valid NHS number (the NHS
   number as a training label); the prior from the deterministic matches. A record takes
   its best match if its match probability reaches ``threshold``.
4. Records still without a person are linked among themselves at the same threshold
   (connected components) and each group becomes a new person.

Everything runs on its own DuckDB connection (in memory): identifiers never touch the
staging database that becomes the release. :func:`link_spark` runs the same model on
Spark for regions beyond one machine.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import duckdb
import pyarrow as pa

from connectors.linkage.index import IDENTITIES_SCHEMA, RECORDS_SCHEMA, PersonIndex

THRESHOLD: Final = 0.99  # match probability at which a probabilistic link is accepted
TRAINING_ROWS: Final = 200_000  # labelled identities sampled to estimate m
U_PAIRS: Final = 2_000_000  # random pairs to estimate u
TF_COLUMNS: Final = ("given_name", "family_name")  # term-frequency adjusted
MIN_LABELLED_PAIRS: Final = 200  # NHS-number pairs needed to estimate m from them
IDENTITY_COLUMNS: Final = (
    "nhs_number", "given_name", "family_name", "birth_date", "sex", "postcode",
)  # fmt: skip


@dataclass
class LinkResult:
    """Each batch record's person and how it was linked; the index after the batch."""

    assignments: pa.Table  # record_key, person, method, match_probability
    index: PersonIndex
    threshold: float
    model: dict[str, Any] = field(default_factory=dict)


def settings(prior: float = 1e-4, trained: dict[str, Any] | None = None) -> Any:
    """The Splink model: comparisons and blocking rules (the same on DuckDB and Spark);
    ``prior`` is the probability that two random records match. ``trained`` (a model
    saved by Splink) sets every level's m and u: how a model trained on DuckDB is carried
    to Spark in Splink's dialect-neutral form."""
    import splink.comparison_library as cl
    from splink import SettingsCreator, block_on

    comparisons = [
        cl.NameComparison("given_name"),
        cl.NameComparison("family_name"),
        cl.DateOfBirthComparison("birth_date", input_is_string=False),
        cl.ExactMatch("sex").configure(m_probabilities=[0.998, 0.002]),
        cl.PostcodeComparison("postcode"),
    ]
    if trained is not None:
        prior = float(trained["probability_two_random_records_match"])
        for comparison, saved in zip(comparisons, trained["comparisons"], strict=True):
            levels = [lv for lv in saved["comparison_levels"] if not lv.get("is_null_level")]
            comparison.configure(
                m_probabilities=[lv.get("m_probability") for lv in levels],
                u_probabilities=[lv.get("u_probability") for lv in levels],
            )
    return SettingsCreator(
        link_type="dedupe_only",
        probability_two_random_records_match=prior,
        unique_id_column_name="uid",
        comparisons=comparisons,
        blocking_rules_to_generate_predictions=[
            block_on("birth_date"),
            block_on("family_name", "given_name"),
            block_on("postcode", "sex"),
            block_on("family_name", "year(birth_date)"),
        ],
        retain_intermediate_calculation_columns=False,
        retain_matching_columns=False,
    )


def _new_connection(threads: int | None, memory_limit: str) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    con.execute(f"SET memory_limit = '{memory_limit}'")
    con.execute("SET preserve_insertion_order = false")
    return con


def link(
    batch: pa.Table,
    index: PersonIndex,
    *,
    threshold: float = THRESHOLD,
    threads: int | None = None,
    memory_limit: str = "4GB",
    progress: Callable[[str], None] | None = None,
    spark: Any = None,
) -> LinkResult:
    """Link ``batch`` (record_key, feed, nhs_valid and the identity columns) to persons.

    With ``spark`` (a ``SparkSession``), the model is trained on DuckDB (on a sample)
    and the candidate pairs are scored on Spark: the step that grows with the region.
    """
    step = progress or (lambda _label: None)
    con = _new_connection(threads, memory_limit)
    try:
        con.register("batch_in", batch)
        con.register("records_in", index.records)
        con.register("identities_in", index.identities)
        con.execute("CREATE TABLE batch AS SELECT * FROM batch_in")
        con.execute("CREATE TABLE known_records AS SELECT * FROM records_in")
        con.execute("CREATE TABLE identities AS SELECT * FROM identities_in")
        con.execute(
            """CREATE TABLE assigned (record_key VARCHAR, person BIGINT, method VARCHAR,
                                      match_probability DOUBLE)"""
        )
        start = index.next_person
        con.execute(
            """CREATE TABLE nhs_person AS
               SELECT nhs_number, min(person) AS person FROM identities
               WHERE nhs_number IS NOT NULL GROUP BY nhs_number"""
        )
        step("linkage: records already known")
        # a known local id keeps its person unless its valid NHS number now belongs to
        # someone else (an organisation that reissued an id): then the number decides
        con.execute(
            """INSERT INTO assigned SELECT b.record_key, k.person, 'known', NULL
               FROM batch b JOIN known_records k USING (record_key)
               LEFT JOIN nhs_person n ON b.nhs_valid AND n.nhs_number = b.nhs_number
               WHERE n.person IS NULL OR n.person = k.person"""
        )
        step("linkage: NHS numbers")
        con.execute(
            f"""
            CREATE TABLE new_nhs AS
            SELECT nhs_number, {start} - 1 + dense_rank() OVER (ORDER BY nhs_number) AS person
            FROM (SELECT DISTINCT nhs_number FROM batch b
                  WHERE nhs_valid AND record_key NOT IN (SELECT record_key FROM assigned)
                    AND nhs_number NOT IN (SELECT nhs_number FROM nhs_person))
            """
        )
        con.execute(
            """INSERT INTO assigned
               SELECT b.record_key, coalesce(p.person, n.person), 'nhs', NULL
               FROM batch b LEFT JOIN nhs_person p USING (nhs_number)
               LEFT JOIN new_nhs n USING (nhs_number)
               WHERE b.nhs_valid AND b.record_key NOT IN (SELECT record_key FROM assigned)"""
        )
        _add_identities(con, ("known", "nhs"))
        unresolved = _count(
            con,
            "SELECT count(*) FROM batch WHERE record_key NOT IN (SELECT record_key FROM assigned)",
        )
        engine = (
            "splink (DuckDB)" if spark is None else "splink (trained on DuckDB, scored on Spark)"
        )
        model: dict[str, Any] = {"engine": engine, "threshold": threshold}
        if unresolved:
            step(f"linkage: {unresolved:,} records by name, date of birth, sex and postcode")
            model.update(_probabilistic(con, threshold, spark))
        _add_identities(con, ("probabilistic", "new person"))
        assignments = con.sql(
            "SELECT record_key, person, method, match_probability FROM assigned"
        ).to_arrow_table()
        records = con.sql(
            """SELECT record_key, person FROM known_records
               UNION ALL SELECT record_key, person FROM assigned WHERE method <> 'known'"""
        ).to_arrow_table()
        identities = con.sql(
            f"SELECT person, {', '.join(IDENTITY_COLUMNS)} FROM identities"
        ).to_arrow_table()
    finally:
        con.close()
    return LinkResult(
        assignments=_table(assignments),
        index=PersonIndex(
            _table(records).cast(RECORDS_SCHEMA), _table(identities).cast(IDENTITIES_SCHEMA)
        ),
        threshold=threshold,
        model=model,
    )


def _table(result: Any) -> pa.Table:
    return result.read_all() if isinstance(result, pa.RecordBatchReader) else result


def _count(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    rows = con.execute(sql).fetchall()
    return int(rows[0][0]) if rows else 0


def _add_identities(con: duckdb.DuckDBPyConnection, methods: tuple[str, ...]) -> None:
    """Every distinct identity of the people just assigned by ``methods`` joins the
    index's identities (NHS numbers only when valid: a mistyped one must never become a
    person's)."""
    cols = ", ".join(IDENTITY_COLUMNS)
    con.execute(
        f"""
        INSERT INTO identities
        SELECT DISTINCT a.person, CASE WHEN b.nhs_valid THEN b.nhs_number END,
               b.given_name, b.family_name, b.birth_date, b.sex, b.postcode
        FROM assigned a JOIN batch b USING (record_key)
        WHERE a.method IN (SELECT unnest($methods))
        EXCEPT SELECT person, {cols} FROM identities
        """,
        {"methods": list(methods)},
    )


class _SparkScorer:
    """Scores candidate pairs with the trained model on Spark; results back as Arrow."""

    def __init__(self, spark: Any, model: dict[str, Any], tf: dict[str, pa.Table]) -> None:
        from splink import SparkAPI

        self.spark = spark
        self.model = model
        self.tf = tf
        self.db = SparkAPI(spark_session=spark)
        self.n = 0

    def _linker(self, table: pa.Table) -> Any:
        from splink import Linker

        linker = Linker(self._frame(table), settings(trained=self.model), log_level=logging.WARNING)
        for col, lookup in self.tf.items():
            linker.table_management.register_term_frequency_lookup(self._frame(lookup), col)
        return linker

    def _frame(self, table: pa.Table) -> Any:
        self.n += 1
        return self.db.register(
            self.spark.createDataFrame(table.to_pandas()), table_name=f"hub_link_{self.n}"
        )

    def between(self, left: pa.Table, right: pa.Table, threshold: float) -> pa.Table:
        linker = self._linker(left)
        frame = linker.inference.predict_between(
            self._frame(left), self._frame(right), threshold_match_probability=threshold,
            warning_mode="never",
        )  # fmt: skip
        return pa.Table.from_pandas(
            frame.as_pandas_dataframe()[["uid_l", "uid_r", "match_weight", "match_probability"]],
            preserve_index=False,
        )

    def within(self, records: pa.Table, threshold: float) -> pa.Table:
        linker = self._linker(records)
        frame = linker.inference.predict_within(
            self._frame(records), threshold_match_probability=threshold, warning_mode="never"
        )
        return pa.Table.from_pandas(
            frame.as_pandas_dataframe()[["uid_l", "uid_r"]], preserve_index=False
        )


def spark_session(cores: int = 2, memory: str = "2g") -> Any:
    """A local Spark session with Splink's similarity functions (jaro_winkler, ...)."""
    import warnings

    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")
    from pyspark.sql import SparkSession
    from splink.backends.spark import similarity_jar_location

    spark = (
        SparkSession.builder.master(f"local[{cores}]")
        .appName("hub-linkage")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.jars", similarity_jar_location())
        .config("spark.sql.shuffle.partitions", str(max(4, 2 * cores)))
        .config("spark.driver.memory", memory)
        .getOrCreate()
    )
    import tempfile

    spark.sparkContext.setCheckpointDir(tempfile.mkdtemp(prefix="hub-spark-"))
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _probabilistic(
    con: duckdb.DuckDBPyConnection, threshold: float, spark: Any = None
) -> dict[str, Any]:
    from splink import DuckDBAPI, Linker

    db = DuckDBAPI(con)
    cols = ", ".join(c for c in IDENTITY_COLUMNS)
    # training: identities with a valid NHS number (the label), sampled
    con.execute(
        f"""CREATE TABLE training AS
            SELECT row_number() OVER () AS uid, {cols} FROM (
                SELECT {cols} FROM identities WHERE nhs_number IS NOT NULL
                USING SAMPLE reservoir({TRAINING_ROWS} ROWS) REPEATABLE (7))"""
    )
    # the prior: pairs sharing an NHS number among all pairs, over the assumed recall of
    # the NHS number (0.98); at least one pair, so that a region with no repeat records
    # still gets a finite prior
    labelled, rows = con.execute(
        """SELECT coalesce(sum(n * (n - 1) / 2), 0), coalesce(sum(n), 0) FROM (
               SELECT count(*) AS n FROM training GROUP BY nhs_number)"""
    ).fetchall()[0]
    all_pairs = max(rows * (rows - 1) / 2, 1)
    prior = min(max(float(labelled), 1.0) / all_pairs / 0.98, 0.5)
    linker = Linker(db.register("training"), settings(prior), log_level=logging.WARNING)
    # name frequencies over every known identity: agreeing on a rare surname is stronger
    # evidence than agreeing on "SMITH"
    tf_tables = {}
    for col in TF_COLUMNS:
        con.execute(
            f"""CREATE TABLE tf_{col} AS
                SELECT {col}, count(*) / sum(count(*)) OVER () AS tf_{col}
                FROM identities WHERE {col} IS NOT NULL GROUP BY {col}"""
        )
        linker.table_management.register_term_frequency_lookup(
            db.register(f"tf_{col}", table_name=f"tf_lookup_{col}"), col
        )
        tf_tables[col] = con.sql(f"SELECT * FROM tf_{col}").to_arrow_table()
    linker.training.estimate_u_using_random_sampling(max_pairs=U_PAIRS, seed=11)
    if labelled >= MIN_LABELLED_PAIRS:
        linker.training.estimate_m_from_label_column("nhs_number")
        m_source = f"{int(labelled):,} record pairs sharing a valid NHS number"
    else:
        m_source = (
            f"Splink's default m probabilities: only {int(labelled):,} record pairs share "
            f"a valid NHS number (at least {MIN_LABELLED_PAIRS:,} are needed to train)"
        )
    # the records to link, and every known identity, with numeric ids for Splink
    con.execute(
        f"""CREATE TABLE left_records AS
            SELECT row_number() OVER (ORDER BY record_key) AS uid, record_key, {cols}
            FROM batch WHERE record_key NOT IN (SELECT record_key FROM assigned)"""
    )
    con.execute(
        f"""CREATE TABLE right_identities AS
            SELECT -row_number() OVER () AS uid, person, {cols} FROM identities"""
    )
    scorer = None
    if spark is not None:
        scorer = _SparkScorer(spark, linker.misc.save_model_to_json(), tf_tables)
        con.register(
            "between_scores",
            scorer.between(
                con.sql(f"SELECT uid, {cols} FROM left_records").to_arrow_table(),
                con.sql(f"SELECT uid, {cols} FROM right_identities").to_arrow_table(),
                threshold,
            ),
        )
        between_name = "between_scores"
    else:
        left = db.register(con.sql(f"SELECT uid, {cols} FROM left_records"), table_name="left_t")
        right = db.register(
            con.sql(f"SELECT uid, {cols} FROM right_identities"), table_name="right_t"
        )
        between_name = linker.inference.predict_between(
            left, right, threshold_match_probability=threshold, warning_mode="never"
        ).physical_name
    con.execute(
        f"""
        INSERT INTO assigned
        SELECT l.record_key, r.person, 'probabilistic', p.match_probability
        FROM (
            SELECT *, row_number() OVER (PARTITION BY left_uid ORDER BY match_weight DESC,
                                                          right_uid) AS rank
            FROM (SELECT CASE WHEN uid_l > 0 THEN uid_l ELSE uid_r END AS left_uid,
                         CASE WHEN uid_l > 0 THEN uid_r ELSE uid_l END AS right_uid,
                         match_weight, match_probability
                  FROM {between_name})
        ) p
        JOIN left_records l ON l.uid = p.left_uid JOIN right_identities r ON r.uid = p.right_uid
        WHERE p.rank = 1
        """
    )
    # the rest: linked among themselves; each connected group is a new person
    rest = con.execute(
        "SELECT uid FROM left_records WHERE record_key NOT IN (SELECT record_key FROM assigned)"
    ).fetchall()
    new_people = 0
    if rest:
        rest_sql = f"""SELECT uid, {cols} FROM left_records
                       WHERE record_key NOT IN (SELECT record_key FROM assigned)"""
        if scorer is not None:
            con.register(
                "within_scores", scorer.within(con.sql(rest_sql).to_arrow_table(), threshold)
            )
            within_name = "within_scores"
        else:
            within_name = linker.inference.predict_within(
                db.register(con.sql(rest_sql), table_name="rest_t"),
                threshold_match_probability=threshold, warning_mode="never",
            ).physical_name  # fmt: skip
        pairs = con.execute(f"SELECT uid_l, uid_r FROM {within_name}").fetchall()
        groups = _components([int(r[0]) for r in rest], pairs)
        start_row = con.execute(
            "SELECT coalesce(max(person), 0) + 1 FROM (SELECT person FROM assigned "
            "UNION ALL SELECT person FROM known_records)"
        ).fetchall()[0]
        start = int(start_row[0]) if start_row else 1
        mapping = pa.table(
            {
                "uid": pa.array(list(groups), pa.int64()),
                "person": pa.array([start + g for g in groups.values()], pa.int64()),
            }
        )
        new_people = len(set(groups.values()))
        con.register("new_groups", mapping)
        con.execute(
            """INSERT INTO assigned
               SELECT l.record_key, g.person, 'new person', NULL
               FROM left_records l JOIN new_groups g USING (uid)"""
        )
    return {
        "trained_on_labelled_identities": _count(con, "SELECT count(*) FROM training"),
        "m_probabilities_from": m_source,
        "u_pairs": U_PAIRS,
        "blocking_rules": [
            "birth_date",
            "family_name and given_name",
            "postcode and sex",
            "family_name and year of birth",
        ],
        "probability_two_random_records_match": prior,
        "new_people_without_nhs_number": new_people,
    }


def _components(nodes: list[int], pairs: list[tuple[Any, ...]]) -> dict[int, int]:
    """Connected components of ``pairs`` over ``nodes``: node → 0-based group number."""
    parent = {n: n for n in nodes}

    def find(n: int) -> int:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for a, b in pairs:
        ra, rb = find(int(a)), find(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    roots: dict[int, int] = {}
    return {n: roots.setdefault(find(n), len(roots)) for n in nodes}

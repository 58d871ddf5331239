"""Record linkage in the identifier zone: which feed records belong to the same person.

- ``layouts``: each feed layout's identifiers in one shape (``link_records``).
- ``index``: the persistent person index (encrypted, in the vault folder), so that a
  later extract links to the people already known and every person keeps one pseudonym.
- ``link``: deterministic on a valid NHS number, then Fellegi-Sunter with Splink on
  DuckDB (or Spark) for the rest.
- ``quality``: match rates per feed and, where a generator's truth is at hand,
  precision, recall and F1 overall and by group.

Nothing here writes to a research table: the result is a map from feed record to the
person index's id, which the feeds connector turns into the release's pseudonyms.
"""

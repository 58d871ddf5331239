"""schemathesis against the hub's own OpenAPI schema, on a live server of its own.

Every operation, each generated request sent as every role (no key, member researcher,
other researcher, steward, modeller, admin), with a fixed seed and bounded examples (a
longer run is in `make bench`): no 5xx, and every response conforms to the schema
(documented status, content type and body; errors are problem+json). schemathesis'
pytest plugin does not support this pytest yet, so its Hypothesis strategies are driven
directly (benchmarks/fuzz.py). The server is its own: fuzzed approvals, suspensions and
queries change the project they are given.
"""

from __future__ import annotations

import shutil

from benchmarks.api import serving
from benchmarks.fuzz import ROLES, fuzz, people


def test_no_generated_request_fails_or_breaks_the_schema_for_any_role(small_home, tmp_path):
    home = tmp_path / "hub"
    shutil.copytree(small_home, home)
    keys, project_id = people(home)
    with serving(home, query_timeout=5) as url:
        result = fuzz(url.removesuffix("/v1"), keys, project_id=project_id, max_examples=8)
    assert result["operations"] >= 15
    assert set(result["by_role"]) == set(ROLES)
    assert result["failures"] == []
    # the fuzz reached the governed layer, not only the front door
    assert {"200", "401", "403", "404", "422"} <= set(result["statuses"])

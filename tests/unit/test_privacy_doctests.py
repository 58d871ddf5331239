"""The doctests of the pure privacy and policy modules run with the unit tests."""

from __future__ import annotations

import doctest

import pytest

from governance import codelists
from governance.access import grants
from governance.outputs import (
    disclosure,
    disclosure_ledger,
    exact_plan,
    person_keys,
    population_index,
    review,
)
from governance.privacy import (
    accounting,
    cohort_query,
    cohort_sql,
    domains,
    dp_expressions,
    dp_query,
    dp_sql,
    mechanism,
)
from governance.sql import cache, engine, mistakes, policy
from models import adassp, cohort, dpsgd, features, mia, spec, trial

MODULES = [accounting, domains, dp_query, dp_sql, dp_expressions, mechanism, policy]
MODULES += [disclosure, disclosure_ledger, exact_plan, person_keys, population_index, review]
MODULES += [codelists, grants, mistakes, cache, engine]


MODULES += [cohort_query, cohort_sql, cohort, dpsgd, features, mia, spec, adassp, trial]


@pytest.mark.parametrize("module", MODULES)
def test_doctests(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0

"""A small synthetic-data spec for tests: four columns, few iterations."""

from __future__ import annotations

SQL = """
SELECT p.person_id, max(p.year_of_birth) AS year_of_birth, max(p.imd_decile) AS imd_decile,
       max(p.sex) AS sex, coalesce(bool_or(c.code = '44054006'), false) AS t2d
FROM patients p LEFT JOIN conditions c USING (person_id) GROUP BY p.person_id
"""


def small_spec(epsilon: float = 1.0, *, iterations: int = 200) -> str:
    return f"""
name = "small"
[cohort]
sql = '''{SQL}'''
[columns.numeric]
year_of_birth = [1920, 2020, 5]
imd_decile = [1, 11, 5]
[columns.categorical]
sex = ["F", "M"]
t2d = [true, false]
[privacy]
epsilon = {epsilon}
[synthesis]
pairs_with = "t2d"
iterations = {iterations}
[evaluation]
outcome = "t2d"
"""

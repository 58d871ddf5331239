-- A flattened person-level table for synthetic data: one row per person registered in
-- the region, with demographics at the release's end of coverage (2024-12-31), ever-
-- recorded conditions and medicines, and the latest BMI, systolic blood pressure and
-- HbA1c. Person-local (see docs/models.md): every derived table is grouped by person_id
-- and joined on it.
SELECT p.person_id,
       2024 - p.year_of_birth AS age,
       p.sex, p.ethnicity, p.imd_decile,
       coalesce(c.hypertension, false) AS hypertension,
       coalesce(c.prediabetes, false) AS prediabetes,
       coalesce(c.t2d, false) AS t2d,
       coalesce(c.chd, false) AS chd,
       coalesce(c.asthma, false) AS asthma,
       coalesce(c.depression, false) AS depression,
       coalesce(m.statin, false) AS statin,
       coalesce(m.antihypertensive, false) AS antihypertensive,
       o.bmi, o.systolic_bp, o.hba1c
FROM patients p
LEFT JOIN (
    SELECT person_id,
           bool_or(code = '38341003') AS hypertension,
           bool_or(code = '714628002') AS prediabetes,
           bool_or(code = '44054006') AS t2d,
           bool_or(code = '53741008') AS chd,
           bool_or(code = '195967001') AS asthma,
           bool_or(code = '35489007') AS depression
    FROM conditions GROUP BY person_id
) c ON c.person_id = p.person_id
LEFT JOIN (
    SELECT person_id,
           bool_or(code = '0212000B0') AS statin,
           bool_or(code IN ('0206020A0', '0205051R0')) AS antihypertensive
    FROM medications GROUP BY person_id
) m ON m.person_id = p.person_id
LEFT JOIN (
    SELECT person_id,
           arg_max(value, observed_date) FILTER (WHERE code = '60621009') AS bmi,
           arg_max(value, observed_date) FILTER (WHERE code = '271649006') AS systolic_bp,
           arg_max(value, observed_date) FILTER (WHERE code = '999791000000106') AS hba1c
    FROM observations GROUP BY person_id
) o ON o.person_id = p.person_id

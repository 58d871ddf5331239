-- The cohort of the who-benefits model: as dpp_cohort.sql, but its outcome is the
-- HbA1c change at the 12-month follow-up (day 300-430), so it needs only that much
-- follow-up, not two years: more people, and those without a 12-month measurement are
-- left out of training by the missing outcome. Features at index: age, sex, ethnicity,
-- IMD decile, latest HbA1c and BMI on or before the index date. Treatment: referral to
-- the programme within 90 days of a first prediabetes diagnosis (SNOMED 714628002).
-- Person-local like dpp_cohort.sql: the end of follow-up is the release's declared
-- coverage (2024-12-31), not a statistic over everyone's records.
SELECT i.person_id,
       year(i.index_date) - p.year_of_birth AS age,
       year(i.index_date) - p.year_of_birth < 60 AS under_60,
       p.imd_decile <= 3 AS most_deprived,
       p.sex, p.ethnicity, p.imd_decile, m.hba1c, m.bmi,
       coalesce(r.referred, false) AS referred,
       coalesce(t.t2d, false) AS t2d_2y,
       m.hba1c_12m - m.hba1c AS hba1c_change_12m
FROM (
    SELECT person_id, min(onset_date) AS index_date
    FROM conditions WHERE code = '714628002' GROUP BY person_id
) i
JOIN patients p ON p.person_id = i.person_id
LEFT JOIN (
    SELECT x.person_id,
           arg_max(o.value, o.observed_date) FILTER (
               WHERE o.code = '999791000000106' AND o.observed_date <= x.index_date) AS hba1c,
           arg_max(o.value, o.observed_date) FILTER (
               WHERE o.code = '60621009' AND o.observed_date <= x.index_date) AS bmi,
           arg_min(o.value, o.observed_date) FILTER (
               WHERE o.code = '999791000000106'
                 AND o.observed_date BETWEEN x.index_date + INTERVAL 300 DAY
                                         AND x.index_date + INTERVAL 430 DAY) AS hba1c_12m
    FROM (
        SELECT person_id, min(onset_date) AS index_date
        FROM conditions WHERE code = '714628002' GROUP BY person_id
    ) x
    JOIN observations o ON o.person_id = x.person_id
    GROUP BY x.person_id
) m ON m.person_id = i.person_id
LEFT JOIN (
    SELECT x.person_id,
           bool_or(pr.code = '1025321000000109'
                   AND pr.procedure_date BETWEEN x.index_date
                                             AND x.index_date + INTERVAL 90 DAY) AS referred
    FROM (
        SELECT person_id, min(onset_date) AS index_date
        FROM conditions WHERE code = '714628002' GROUP BY person_id
    ) x
    JOIN procedures pr ON pr.person_id = x.person_id
    GROUP BY x.person_id
) r ON r.person_id = i.person_id
LEFT JOIN (
    SELECT x.person_id,
           bool_or(c.code = '44054006' AND c.onset_date > x.index_date
                   AND c.onset_date <= x.index_date + INTERVAL 760 DAY) AS t2d
    FROM (
        SELECT person_id, min(onset_date) AS index_date
        FROM conditions WHERE code = '714628002' GROUP BY person_id
    ) x
    JOIN conditions c ON c.person_id = x.person_id
    GROUP BY x.person_id
) t ON t.person_id = i.person_id
WHERE i.index_date >= DATE '2015-01-01'
  AND i.index_date + INTERVAL 430 DAY <= DATE '2024-12-31'

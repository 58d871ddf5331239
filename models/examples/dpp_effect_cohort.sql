-- The cohort of the who-benefits model: as dpp_cohort.sql, but its outcome is the
-- HbA1c change at the 12-month follow-up (day 300-430), so it needs only that much
-- follow-up, not two years: more people, and those without a 12-month measurement are
-- left out of training by the missing outcome. Features at index: age, sex, ethnicity,
-- IMD decile, latest HbA1c and BMI on or before the index date. Treatment: referral to
-- the programme within 90 days of a first prediabetes diagnosis (SNOMED 714628002).
WITH idx AS (
    SELECT person_id, min(onset_date) AS index_date
    FROM conditions WHERE code = '714628002' GROUP BY person_id
),
hba1c AS (
    SELECT i.person_id, arg_max(o.value, o.observed_date) AS hba1c
    FROM idx i JOIN observations o ON o.person_id = i.person_id
    WHERE o.code = '999791000000106' AND o.observed_date <= i.index_date
    GROUP BY i.person_id
),
bmi AS (
    SELECT i.person_id, arg_max(o.value, o.observed_date) AS bmi
    FROM idx i JOIN observations o ON o.person_id = i.person_id
    WHERE o.code = '60621009' AND o.observed_date <= i.index_date
    GROUP BY i.person_id
),
referral AS (
    SELECT DISTINCT i.person_id
    FROM idx i JOIN procedures p ON p.person_id = i.person_id
    WHERE p.code = '1025321000000109'
      AND p.procedure_date BETWEEN i.index_date AND i.index_date + INTERVAL 90 DAY
),
t2d AS (
    SELECT DISTINCT i.person_id
    FROM idx i JOIN conditions c ON c.person_id = i.person_id
    WHERE c.code = '44054006' AND c.onset_date > i.index_date
      AND c.onset_date <= i.index_date + INTERVAL 760 DAY
),
hba1c_12m AS (
    SELECT i.person_id, arg_min(o.value, o.observed_date) AS hba1c_12m
    FROM idx i JOIN observations o ON o.person_id = i.person_id
    WHERE o.code = '999791000000106'
      AND o.observed_date BETWEEN i.index_date + INTERVAL 300 DAY AND i.index_date + INTERVAL 430 DAY
    GROUP BY i.person_id
),
window_end AS (SELECT max(observed_date) AS last_day FROM observations)
SELECT i.person_id,
       year(i.index_date) - p.year_of_birth AS age,
       year(i.index_date) - p.year_of_birth < 60 AS under_60,
       p.imd_decile <= 3 AS most_deprived,
       p.sex, p.ethnicity, p.imd_decile, h.hba1c, b.bmi,
       r.person_id IS NOT NULL AS referred,
       t.person_id IS NOT NULL AS t2d_2y,
       f.hba1c_12m - h.hba1c AS hba1c_change_12m
FROM idx i
JOIN patients p ON p.person_id = i.person_id
CROSS JOIN window_end w
LEFT JOIN hba1c h ON h.person_id = i.person_id
LEFT JOIN bmi b ON b.person_id = i.person_id
LEFT JOIN referral r ON r.person_id = i.person_id
LEFT JOIN t2d t ON t.person_id = i.person_id
LEFT JOIN hba1c_12m f ON f.person_id = i.person_id
WHERE i.index_date >= DATE '2015-01-01'
  AND i.index_date + INTERVAL 430 DAY <= w.last_day

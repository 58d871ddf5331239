"""Turn a chunk's integer columns into Arrow tables and write them as Parquet, CSV or
FHIR R4 Bulk Data NDJSON.

Coded columns are dictionary-encoded (indices into the catalogue), so no Python string
is built per row for Parquet output; CSV casts them to plain strings in Arrow.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from synthetic_data import catalogue as cat
from synthetic_data import reference as ref
from synthetic_data.simulate import NULL, Columns
from synthetic_data.world import World

OutputFormat = Literal["parquet", "csv", "fhir"]
TABLES: Final = (
    "patients",
    "encounters",
    "conditions",
    "observations",
    "medications",
    "procedures",
)
SEX: Final = ("F", "M")


@functools.cache
def _unique(values: tuple[str, ...]) -> tuple[pa.Array, np.ndarray]:
    # Parquet's dictionary page is only reproducible when the dictionary has no repeats
    uniques, inverse = np.unique(np.array(values, dtype=object), return_inverse=True)
    return pa.array(list(uniques), pa.string()), inverse.astype(np.int32)


def _dict(indices: np.ndarray, values: tuple[str, ...]) -> pa.DictionaryArray:
    dictionary, remap = _unique(values)
    mask = indices < 0
    idx = pa.array(remap[np.where(mask, 0, indices)], mask=mask)
    return pa.DictionaryArray.from_arrays(idx, dictionary)


def _date(days: np.ndarray) -> pa.Array:
    mask = days == NULL
    return pa.array(np.where(mask, 0, days).astype(np.int32), type=pa.date32(), mask=mask)


def _int(values: np.ndarray) -> pa.Array:
    mask = values == NULL
    return pa.array(np.where(mask, 0, values).astype(np.int64), mask=mask)


_SYSTEMS = tuple(c.system for c in cat.CONCEPTS)
_CODES = tuple(c.code for c in cat.CONCEPTS)
_DISPLAYS = tuple(c.display for c in cat.CONCEPTS)


def _concept(cols: Columns) -> dict[str, pa.Array]:
    concept = cols["concept"]
    return {
        "code_system": _dict(concept, _SYSTEMS),
        "code": _dict(concept, _CODES),
        "description": _dict(concept, _DISPLAYS),
    }


def to_arrow(name: str, cols: Columns, world: World) -> pa.Table:
    if name == "patients":
        nhs = pa.array(cols["nhs_number"].astype(np.int64)).cast(pa.string())
        given = world.female_names.names + world.male_names.names
        street = _dict(cols["street"], world.streets).cast(pa.string())
        address = pc.binary_join_element_wise(
            pa.array(cols["house_number"]).cast(pa.string()), street, " "
        )
        postcode = pc.binary_join_element_wise(
            _dict(cols["district"], world.postcode_districts).cast(pa.string()),
            _dict(cols["inward"], world.inward_codes).cast(pa.string()),
            " ",
        )
        return pa.table(
            {
                "patient_id": _int(cols["patient_id"]),
                "nhs_number": nhs,
                "given_name": _dict(cols["given_name"], given),
                "family_name": _dict(cols["family_name"], world.family_names.names),
                "address_line": address,
                "town": _dict(cols["local_authority"], ref.LOCAL_AUTHORITIES),
                "postcode": postcode,
                "date_of_birth": _date(cols["date_of_birth"]),
                "sex": _dict(cols["sex"], SEX),
                "ethnicity": _dict(cols["ethnicity"], ref.ETHNIC_GROUPS),
                "local_authority": _dict(cols["local_authority"], ref.LOCAL_AUTHORITIES),
                "imd_decile": pa.array(cols["imd_decile"].astype(np.int8)),
                "practice_code": _dict(cols["practice"], world.organisation_codes),
                "registration_start": _date(cols["registration_start"]),
                "registration_end": _date(cols["registration_end"]),
                "date_of_death": _date(cols["date_of_death"]),
            }
        )
    head = {
        f"{name[:-1]}_id": _int(cols[f"{name[:-1]}_id"]),
        "patient_id": _int(cols["patient_id"]),
    }
    if name == "encounters":
        return pa.table(
            {
                **head,
                "encounter_type": _dict(cols["encounter_type"], ref.ENCOUNTER_TYPES),
                "organisation_code": _dict(cols["organisation"], world.organisation_codes),
                "start_date": _date(cols["start_date"]),
                "end_date": _date(cols["end_date"]),
            }
        )
    head["encounter_id"] = _int(cols["encounter_id"])
    body = _concept(cols)
    if name == "conditions":
        return pa.table({**head, **body, "onset_date": _date(cols["onset_date"])})
    if name == "observations":
        value = cols["value"].astype(np.float64)
        return pa.table(
            {
                **head,
                **body,
                "value": pa.array(value, mask=np.isnan(value)),
                "unit": _dict(cols["unit"], cat.UNITS),
                "observed_date": _date(cols["observed_date"]),
            }
        )
    if name == "medications":
        return pa.table(
            {
                **head,
                **body,
                "start_date": _date(cols["start_date"]),
                "end_date": _date(cols["end_date"]),
            }
        )
    if name == "procedures":
        return pa.table({**head, **body, "procedure_date": _date(cols["procedure_date"])})
    raise ValueError(f"unknown table {name!r}")


def ground_truth(cols: Columns) -> pa.Table:
    return pa.table({k: _date(v) if k == "index_date" else v for k, v in cols.items()})


def organisations(world: World) -> pa.Table:
    return pa.table(
        {
            "organisation_code": world.organisation_codes,
            "name": world.organisation_names,
            "kind": world.organisation_kinds,
            "local_authority": [ref.LOCAL_AUTHORITIES[i] for i in world.organisation_authority],
        }
    )


def plain(table: pa.Table) -> pa.Table:
    """Cast dictionary columns to plain strings (for CSV and pandas-free consumers)."""
    fields = [
        pa.field(f.name, pa.string()) if pa.types.is_dictionary(f.type) else f for f in table.schema
    ]
    return table.cast(pa.schema(fields))


def write(table: pa.Table, path: Path, fmt: OutputFormat) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        pa_csv.write_csv(plain(table), path.with_suffix(".csv"))
    else:
        pq.write_table(table, path.with_suffix(".parquet"), compression="zstd")


# --------------------------------------------------------------------------- FHIR

_NHS_SYSTEM: Final = "https://fhir.nhs.uk/Id/nhs-number"
_ODS_SYSTEM: Final = "https://fhir.nhs.uk/Id/ods-organization-code"
_UCUM: Final = "http://unitsofmeasure.org"
_GENDER: Final = {"F": "female", "M": "male"}


def _coding(system: str | None, code: str | None, display: str | None) -> dict[str, Any]:
    coding: dict[str, Any] = {"code": code, "display": display}
    if system is not None:
        coding["system"] = ref.SYSTEM_URIS.get(system, system)
    return {"coding": [{k: v for k, v in coding.items() if v is not None}], "text": display}


def _ref(kind: str, ident: int | None) -> dict[str, str] | None:
    return None if ident is None else {"reference": f"{kind}/{ident}"}


def _clean(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if v is not None}


def _patients(t: pa.Table) -> Iterator[dict[str, Any]]:
    for r in plain(t).to_pylist():
        death = r["date_of_death"]
        yield _clean(
            {
                "resourceType": "Patient",
                "id": str(r["patient_id"]),
                "identifier": [{"system": _NHS_SYSTEM, "value": r["nhs_number"]}],
                "name": [
                    {"use": "official", "family": r["family_name"], "given": [r["given_name"]]}
                ],
                "gender": _GENDER.get(r["sex"] or "", "unknown"),
                "birthDate": r["date_of_birth"].isoformat() if r["date_of_birth"] else None,
                "deceasedDateTime": death.isoformat() if death else None,
                "address": [
                    {
                        "line": [r["address_line"]],
                        "city": r["town"],
                        "district": r["local_authority"],
                        "postalCode": r["postcode"],
                        "country": "GB",
                    }
                ],
                "generalPractitioner": [
                    {"identifier": {"system": _ODS_SYSTEM, "value": r["practice_code"]}}
                ],
                "extension": [
                    {
                        "url": "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-EthnicCategory",
                        "valueCodeableConcept": {"text": r["ethnicity"]},
                    }
                ],
            }
        )


def _encounters(t: pa.Table) -> Iterator[dict[str, Any]]:
    for r in plain(t).to_pylist():
        kind = r["encounter_type"]
        klass = ref.ENCOUNTER_CLASS[ref.ENCOUNTER_TYPES.index(kind)] if kind else "AMB"
        end = r["end_date"]
        yield _clean(
            {
                "resourceType": "Encounter",
                "id": str(r["encounter_id"]),
                "status": "finished",
                "class": {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                    "code": klass,
                },
                "type": [{"text": kind}],
                "subject": _ref("Patient", r["patient_id"]),
                "period": _clean(
                    {
                        "start": r["start_date"].isoformat() if r["start_date"] else None,
                        "end": end.isoformat() if end else None,
                    }
                ),
                "serviceProvider": {
                    "identifier": {"system": _ODS_SYSTEM, "value": r["organisation_code"]}
                },
            }
        )


def _conditions(t: pa.Table) -> Iterator[dict[str, Any]]:
    for r in plain(t).to_pylist():
        onset = r["onset_date"]
        yield _clean(
            {
                "resourceType": "Condition",
                "id": str(r["condition_id"]),
                "clinicalStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                            "code": "active",
                        }
                    ]
                },
                "code": _coding(r["code_system"], r["code"], r["description"]),
                "subject": _ref("Patient", r["patient_id"]),
                "encounter": _ref("Encounter", r["encounter_id"]),
                "onsetDateTime": onset.isoformat() if onset else None,
                "recordedDate": onset.isoformat() if onset else None,
            }
        )


def _observations(t: pa.Table) -> Iterator[dict[str, Any]]:
    for r in plain(t).to_pylist():
        date = r["observed_date"]
        value = r["value"]
        quantity = None
        if value is not None:
            quantity = _clean(
                {"value": value, "unit": r["unit"], "system": _UCUM, "code": r["unit"]}
            )
        category = (
            "vital-signs"
            if r["code"] in ("60621009", "271649006", "271650006")
            else ("social-history" if value is None else "laboratory")
        )
        yield _clean(
            {
                "resourceType": "Observation",
                "id": str(r["observation_id"]),
                "status": "final",
                "category": [
                    {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                "code": category,
                            }
                        ]
                    }
                ],
                "code": _coding(r["code_system"], r["code"], r["description"]),
                "subject": _ref("Patient", r["patient_id"]),
                "encounter": _ref("Encounter", r["encounter_id"]),
                "effectiveDateTime": date.isoformat() if date else None,
                "valueQuantity": quantity,
            }
        )


def _medications(t: pa.Table) -> Iterator[dict[str, Any]]:
    for r in plain(t).to_pylist():
        start, end = r["start_date"], r["end_date"]
        period = _clean(
            {
                "start": start.isoformat() if start else None,
                "end": end.isoformat() if end else None,
            }
        )
        yield _clean(
            {
                "resourceType": "MedicationRequest",
                "id": str(r["medication_id"]),
                "status": "completed" if end else "active",
                "intent": "order",
                "medicationCodeableConcept": _coding(r["code_system"], r["code"], r["description"]),
                "subject": _ref("Patient", r["patient_id"]),
                "encounter": _ref("Encounter", r["encounter_id"]),
                "authoredOn": start.isoformat() if start else None,
                "dispenseRequest": {"validityPeriod": period} if period else None,
            }
        )


def _procedures(t: pa.Table) -> Iterator[dict[str, Any]]:
    for r in plain(t).to_pylist():
        date = r["procedure_date"]
        yield _clean(
            {
                "resourceType": "Procedure",
                "id": str(r["procedure_id"]),
                "status": "completed",
                "code": _coding(r["code_system"], r["code"], r["description"]),
                "subject": _ref("Patient", r["patient_id"]),
                "encounter": _ref("Encounter", r["encounter_id"]),
                "performedDateTime": date.isoformat() if date else None,
            }
        )


FHIR_RESOURCES: Final = {
    "patients": ("Patient", _patients),
    "encounters": ("Encounter", _encounters),
    "conditions": ("Condition", _conditions),
    "observations": ("Observation", _observations),
    "medications": ("MedicationRequest", _medications),
    "procedures": ("Procedure", _procedures),
}


def write_fhir(name: str, table: pa.Table, out: Path, chunk_index: int) -> int:
    """Write one NDJSON file of a resource type for a chunk; return resources written."""
    resource_type, convert = FHIR_RESOURCES[name]
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{resource_type}.{chunk_index:03d}.ndjson"
    count = 0
    with path.open("w", encoding="utf-8") as fh:
        for resource in convert(table):
            fh.write(json.dumps(resource, separators=(",", ":"), ensure_ascii=False))
            fh.write("\n")
            count += 1
    return count

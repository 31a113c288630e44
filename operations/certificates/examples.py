"""Synthetic FHIR resources of one result, for tests, benchmarks and demonstrations.

Every identity is invented; the FINESS and INS numbers are built with valid check digits.
"""
from __future__ import annotations

import datetime as dt

from stdnum import luhn

RESULT_CODES = {"not-detected": "260415000", "detected": "260373001", "inconclusive": "419984006"}
LOINC_OF_KIND = {"naat": "94500-6", "antigen": "94558-4", "serology": "94563-4"}
EXAMPLE_RAT_DEVICE = "1232"  # Abbott Panbio, in the vendored EU list (test-manf.json)


def synthetic_finess(body: str = "75099999") -> str:
    return body + luhn.calc_check_digit(body)


def synthetic_nir(body: str = "1850375999123") -> str:
    return body + f"{97 - int(body) % 97:02d}"


def example_resources(*, family="Lefèvre-Dubois", given=("Françoise-Hélène",),
                      birth_date="1985-03-07", kind="naat", result="not-detected",
                      sampled_at: dt.datetime | None = None, status="final", version="1",
                      device=EXAMPLE_RAT_DEVICE, lab_name="Laboratoire Synthétique du Parc",
                      report_id="dr-example") -> dict:
    """Patient, Organization, Specimen, Observation and DiagnosticReport as stored JSON dicts."""
    sampled_at = sampled_at or dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=20)
    issued = sampled_at + dt.timedelta(hours=6)
    patient = {
        "resourceType": "Patient", "id": f"{report_id}-patient", "meta": {"versionId": "1"},
        "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": synthetic_nir()}],
        "name": [{"use": "official", "family": family, "given": list(given)}],
        "gender": "female", "birthDate": birth_date,
    }
    organization = {
        "resourceType": "Organization", "id": f"{report_id}-lab", "meta": {"versionId": "1"},
        "identifier": [{"system": "https://finess.esante.gouv.fr", "value": synthetic_finess()}],
        "name": lab_name,
    }
    specimen = {
        "resourceType": "Specimen", "id": f"{report_id}-specimen", "meta": {"versionId": "1"},
        "subject": {"reference": f"Patient/{patient['id']}"},
        "collection": {"collectedDateTime": sampled_at.isoformat()},
    }
    observation = {
        "resourceType": "Observation", "id": f"{report_id}-obs", "meta": {"versionId": version},
        "status": status,
        "code": {"coding": [{"system": "http://loinc.org", "code": LOINC_OF_KIND[kind]}]},
        "subject": {"reference": f"Patient/{patient['id']}"},
        "specimen": {"reference": f"Specimen/{specimen['id']}"},
        "performer": [{"reference": f"Organization/{organization['id']}"}],
        "effectiveDateTime": sampled_at.isoformat(),
        "issued": issued.isoformat(),
        "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct",
                                             "code": RESULT_CODES[result]}]},
    }
    if kind == "antigen" and device:
        observation["device"] = {"identifier": {
            "system": "https://covid-19-diagnostics.jrc.ec.europa.eu/devices", "value": device}}
    report = {
        "resourceType": "DiagnosticReport", "id": report_id, "meta": {"versionId": version},
        "status": status, "code": observation["code"],
        "subject": {"reference": f"Patient/{patient['id']}"},
        "performer": [{"reference": f"Organization/{organization['id']}"}],
        "result": [{"reference": f"Observation/{observation['id']}"}],
        "issued": issued.isoformat(),
    }
    return {"report": report, "observation": observation, "specimen": specimen,
            "patient": patient, "organization": organization}

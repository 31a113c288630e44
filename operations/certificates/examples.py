"""Synthetic FHIR resources of one result, for tests, benchmarks and demonstrations, built by the
same dossier builder as the web UI and the synthetic generator, in their stored form.

Every identity is invented; the FINESS and INS numbers are built with valid check digits.
"""

from __future__ import annotations

import datetime as dt

from stdnum import luhn

from fhir_server.dossier import LOINC, SNOMED, Dossier, Party, as_stored, dossier_bundle

RESULT_CODES = {"not-detected": "260415000", "detected": "260373001", "inconclusive": "419984006"}
LOINC_OF_KIND = {"naat": "94500-6", "antigen": "94558-4", "serology": "94563-4"}
SPECIMEN_OF_KIND = {"naat": "258500001", "antigen": "258500001", "serology": "119297000"}
EXAMPLE_RAT_DEVICE = "1232"  # Abbott Panbio, in the vendored EU list (test-manf.json)
RAT_DEVICES = "https://covid-19-diagnostics.jrc.ec.europa.eu/devices"
FINESS = "https://finess.esante.gouv.fr"
NIR = "urn:oid:1.2.250.1.213.1.4.8"


def synthetic_finess(body: str = "75099999") -> str:
    return body + luhn.calc_check_digit(body)


def synthetic_nir(body: str = "1850375999123") -> str:
    return body + f"{97 - int(body) % 97:02d}"


def example_resources(
    *,
    family="Lefèvre-Dubois",
    given=("Françoise-Hélène",),
    birth_date="1985-03-07",
    kind="naat",
    result="not-detected",
    sampled_at: dt.datetime | None = None,
    status="final",
    version="1",
    device=EXAMPLE_RAT_DEVICE,
    lab_name="Laboratoire Synthétique du Parc",
    report_id="dr-example",
) -> dict:
    """Patient, Organization, Specimen, Observation and DiagnosticReport as stored JSON dicts."""
    sampled_at = sampled_at or dt.datetime.now(dt.UTC) - dt.timedelta(hours=20)
    finess = synthetic_finess()
    lab = Party(
        {"resourceType": "Organization", "identifier": [{"system": FINESS, "value": finess}], "name": lab_name},
        "PUT",
        f"identifier={FINESS}|{finess}",
    )
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": NIR, "value": synthetic_nir()}],
        "name": [{"use": "official", "family": family, "given": list(given)}],
        "gender": "female",
        "birthDate": birth_date,
    }
    dossier = Dossier(
        system=f"https://sidep.example.fr/dossier/{finess}",
        number=report_id,
        patient=patient,
        test_code={"coding": [{"system": LOINC, "code": LOINC_OF_KIND[kind]}]},
        specimen_type={"system": SNOMED, "code": SPECIMEN_OF_KIND[kind]},
        value={"valueCodeableConcept": {"coding": [{"system": SNOMED, "code": RESULT_CODES[result]}]}},
        collected=sampled_at,
        issued=sampled_at + dt.timedelta(hours=6),
        authored=sampled_at,
        parties=[lab],
        performers=[lab.reference()],
        status=status,
        device={"identifier": {"system": RAT_DEVICES, "value": device}} if kind == "antigen" and device else None,
    )
    stored = as_stored(
        dossier_bundle(dossier),
        {
            "DiagnosticReport": report_id,
            "Observation": f"{report_id}-obs",
            "Specimen": f"{report_id}-specimen",
            "Patient": f"{report_id}-patient",
            "Organization": f"{report_id}-lab",
            "ServiceRequest": f"{report_id}-request",
        },
        version,
    )
    stored["Patient"]["meta"] = stored["Organization"]["meta"] = stored["Specimen"]["meta"] = {"versionId": "1"}
    return {
        "report": stored["DiagnosticReport"],
        "observation": stored["Observation"],
        "specimen": stored["Specimen"],
        "patient": stored["Patient"],
        "organization": stored["Organization"],
    }

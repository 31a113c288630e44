"""The facts a certificate states, read from the stored FHIR R4 resources of one result.

Conventions for the FHIR data (SI-DEP profiles):
- Patient.name with use "official": family = birth name, given = given names (the FR Core
  extension `...birth-list-given-name`, when present, carries the full list and wins);
- Observation.code: a LOINC code, its kind (naat / antigen / serology) from loinc_kinds.json;
- Observation.valueCodeableConcept: SNOMED CT 260373001 detected, 260415000 not detected,
  419984006 inconclusive; a serology may instead give a valueQuantity (antibodies in U/mL, as
  the synthetic generator writes them) read with its interpretation (v3 ObservationInterpretation
  POS / NEG; IND or none: inconclusive);
- Specimen.collection.collectedDateTime (or collectedPeriod.start): the sampling time;
- Organization.identifier with system https://finess.esante.gouv.fr (or the older
  http://finess.sante.gouv.fr): the laboratory's FINESS;
- rapid antigen device (DCC `ma`): Observation.device.identifier or Observation.method.coding with
  system https://covid-19-diagnostics.jrc.ec.europa.eu/devices; test name (DCC `nm`):
  Observation.method.text, else Observation.device.display.

Errors are FhirError with an OperationOutcome issue whose `expression` points at the element.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from fhir_server.outcome import FhirError

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
FINESS_SYSTEMS = ("https://finess.esante.gouv.fr", "http://finess.sante.gouv.fr")
JRC_DEVICES = "https://covid-19-diagnostics.jrc.ec.europa.eu/devices"
RESULTS = {"260373001": "detected", "260415000": "not-detected", "419984006": "inconclusive"}
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
INTERPRETED_RESULTS = {"POS": "detected", "DET": "detected", "NEG": "not-detected", "ND": "not-detected"}
# "amended", "corrected" and "appended" are final results that were changed afterwards.
FINAL_STATUSES = frozenset({"final", "amended", "corrected", "appended"})

_KINDS_FILE = Path(__file__).with_name("loinc_kinds.json")


@dataclass(frozen=True)
class CertificateFacts:
    family_name: str
    given_names: str
    birth_date: str  # YYYY, YYYY-MM or YYYY-MM-DD, as FHIR stores it
    test_kind: str  # naat | antigen | serology
    loinc: str
    result: str  # detected | not-detected | inconclusive
    sampled_at: datetime  # timezone-aware
    issued_at: datetime  # timezone-aware
    lab_name: str | None
    lab_finess: str | None
    version_key: str  # e.g. "DiagnosticReport/r1/_history/3|Observation/o1/_history/2"
    device_id: str | None = None  # DCC t.ma (rapid antigen tests)
    test_name: str | None = None  # DCC t.nm (NAAT)
    measured: str | None = None  # a quantitative result as printed ("123.4 U/mL"), serology


@lru_cache(maxsize=1)
def loinc_table() -> dict:
    return json.loads(_KINDS_FILE.read_text(encoding="utf-8"))


def kind_of_loinc(code: str) -> str | None:
    return loinc_table()["codes"].get(code)


def _unprocessable(en: str, fr: str, expression: str) -> FhirError:
    return FhirError.of(422, "processing", en, fr, expression)


def parse_fhir_datetime(value: str | None, expression: str) -> datetime:
    """A FHIR dateTime with a time part, timezone-aware (FHIR requires the offset then)."""
    if not value or "T" not in value:
        raise _unprocessable(
            f"A date and time is required at {expression}.",
            f"Une date et une heure sont requises en {expression}.",
            expression,
        )
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _unprocessable(
            f"Invalid dateTime '{value}' at {expression}.",
            f"Date-heure invalide « {value} » en {expression}.",
            expression,
        ) from None
    if parsed.tzinfo is None:
        raise _unprocessable(
            f"The dateTime at {expression} has no timezone.",
            f"La date-heure en {expression} n'a pas de fuseau horaire.",
            expression,
        )
    return parsed


def version_key_of(resource: dict) -> str:
    version = (resource.get("meta") or {}).get("versionId") or "1"
    return f"{resource['resourceType']}/{resource.get('id')}/_history/{version}"


def require_final_status(report: dict | None, observation: dict) -> None:
    """409 unless the result is final: a certificate must never state a preliminary result."""
    resource = report if report is not None else observation
    status = resource.get("status")
    if status not in FINAL_STATUSES:
        kind = resource["resourceType"]
        raise FhirError.of(
            409,
            "conflict",
            f"The result is not final (status '{status}'): no certificate can be issued yet.",
            f"Le résultat n'est pas définitif (statut « {status} ») : aucun certificat ne peut encore être délivré.",
            f"{kind}.status",
        )


def _official_name(patient: dict) -> dict:
    names = patient.get("name") or []
    official = [n for n in names if n.get("use") == "official"]
    chosen = (official or names or [None])[0]
    if not chosen:
        raise _unprocessable("The patient has no name.", "Le patient n'a pas de nom.", "Patient.name")
    return chosen


def _given_names(name: dict) -> str:
    for extension in name.get("extension") or []:
        if extension.get("url", "").endswith("birth-list-given-name") and extension.get("valueString"):
            return " ".join(extension["valueString"].split())
    return " ".join(g.strip() for g in name.get("given") or [] if g and g.strip())


def _coding(concept: dict | None, system: str) -> str | None:
    for coding in (concept or {}).get("coding") or []:
        if coding.get("system") == system and coding.get("code"):
            return coding["code"]
    return None


def _test_kind(observation: dict) -> tuple[str, str]:
    loinc = _coding(observation.get("code"), LOINC)
    if not loinc:
        raise _unprocessable(
            "The observation has no LOINC code.", "L'observation n'a pas de code LOINC.", "Observation.code"
        )
    kind = kind_of_loinc(loinc)
    if not kind:
        raise _unprocessable(
            f"LOINC {loinc} is not a SARS-CoV-2 test this service certifies.",
            f"Le code LOINC {loinc} n'est pas un test SARS-CoV-2 certifiable.",
            "Observation.code",
        )
    return kind, loinc


def _result(observation: dict, kind: str) -> str:
    if kind == "serology" and "valueQuantity" in observation and "valueCodeableConcept" not in observation:
        return _interpreted_result(observation)
    code = _coding(observation.get("valueCodeableConcept"), SNOMED)
    if code not in RESULTS:
        raise _unprocessable(
            "The result is not a SNOMED CT detected / not detected / inconclusive code.",
            "Le résultat n'est pas un code SNOMED CT détecté / non détecté / non conclusif.",
            "Observation.valueCodeableConcept",
        )
    return RESULTS[code]


def _interpreted_result(observation: dict) -> str:
    for concept in observation.get("interpretation") or []:
        code = _coding(concept, INTERPRETATION)
        if code:
            return INTERPRETED_RESULTS.get(code, "inconclusive")
    return "inconclusive"  # a number alone says nothing a patient can read as a result


def _measured(observation: dict) -> str | None:
    quantity = observation.get("valueQuantity")
    if not isinstance(quantity, dict) or not isinstance(quantity.get("value"), int | float):
        return None
    unit = quantity.get("unit") or quantity.get("code") or ""
    value = f"{quantity['value']:g}".replace(".", ",")  # French decimal comma
    return f"{quantity.get('comparator', '')}{value} {unit}".strip()


def _sampling_time(specimen: dict | None, observation: dict) -> datetime:
    collection = (specimen or {}).get("collection") or {}
    value = collection.get("collectedDateTime") or (collection.get("collectedPeriod") or {}).get("start")
    if value:
        return parse_fhir_datetime(value, "Specimen.collection.collectedDateTime")
    # Without a Specimen, the observation's effective time is the sampling time by convention.
    return parse_fhir_datetime(observation.get("effectiveDateTime"), "Specimen.collection.collectedDateTime")


def _issued_time(report: dict | None, observation: dict) -> datetime:
    for resource, kind in ((report, "DiagnosticReport"), (observation, "Observation")):
        if resource and resource.get("issued"):
            return parse_fhir_datetime(resource["issued"], f"{kind}.issued")
    last_updated = ((report or observation).get("meta") or {}).get("lastUpdated")
    return parse_fhir_datetime(last_updated, "DiagnosticReport.issued")


def _finess(organization: dict | None) -> str | None:
    for identifier in (organization or {}).get("identifier") or []:
        if identifier.get("system") in FINESS_SYSTEMS and identifier.get("value"):
            return identifier["value"]
    return None


def _device_id(observation: dict) -> str | None:
    identifier = (observation.get("device") or {}).get("identifier") or {}
    if identifier.get("system") == JRC_DEVICES and identifier.get("value"):
        return str(identifier["value"])
    return _coding(observation.get("method"), JRC_DEVICES)


def _test_name(observation: dict) -> str | None:
    return (observation.get("method") or {}).get("text") or (observation.get("device") or {}).get("display")


def facts_from_resources(
    report: dict | None, observation: dict, specimen: dict | None, patient: dict, organization: dict | None
) -> CertificateFacts:
    """Build the facts of one result; `report` is None when the operation runs on an Observation."""
    require_final_status(report, observation)
    name = _official_name(patient)
    if not patient.get("birthDate"):
        raise _unprocessable(
            "The patient has no birth date.", "Le patient n'a pas de date de naissance.", "Patient.birthDate"
        )
    kind, loinc = _test_kind(observation)
    version_key = version_key_of(observation)
    if report is not None:
        version_key = f"{version_key_of(report)}|{version_key}"
    return CertificateFacts(
        family_name=" ".join((name.get("family") or "").split()),
        given_names=_given_names(name),
        birth_date=patient["birthDate"],
        test_kind=kind,
        loinc=loinc,
        result=_result(observation, kind),
        sampled_at=_sampling_time(specimen, observation),
        issued_at=_issued_time(report, observation),
        lab_name=(organization or {}).get("name"),
        lab_finess=_finess(organization),
        version_key=version_key,
        device_id=_device_id(observation),
        test_name=_test_name(observation),
        measured=_measured(observation),
    )

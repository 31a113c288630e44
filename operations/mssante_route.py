"""`$mssante-route` on Organization: where the certificates of a laboratory site's patients without
a mobile or an e-mail go — the site's or the legal entity's MSSanté mailbox stamped @SIDEP, per the
directory in service (fhir_server/storage/mailboxes.py) — or why they cannot go anywhere.

- instance: `GET [base]/Organization/{id}/$mssante-route`: the site FINESS is the Organization's,
  the legal entity's that of `partOf` (its identifier, else the Organization it refers to);
- type: `GET [base]/Organization/$mssante-route?finess=SITE[&legal-finess=LEGAL]`: the legal
  entity, when not given, from the stored Organization holding that FINESS.

Output: a Parameters resource with `site-finess`, `legal-finess` and either `address` and `level`
(site | legal) or `reason` (French, for operators), `site-count` and `legal-count`.

A laboratory sees the routes of its own Organizations (its legal entity and its sites) only:
another's answers as a missing one, as patient data does (auth/policy.py); operators see all.
Organizations are not patient data: no AuditEvent, as for their reads.
"""

from __future__ import annotations

from flask import current_app

from fhir_server.auth.policy import finess_numbers, hidden
from fhir_server.auth.principal import current_principal
from fhir_server.outcome import FhirError
from fhir_server.storage import Record, mailboxes
from fhir_server.submission import business_keys
from profiles.validators import FINESS, FINESS_SYSTEMS, is_valid_finess

from .registry import OperationCall, operation

PARAMETERS = [
    {
        "name": "finess",
        "use": "in",
        "min": 0,
        "max": "1",
        "type": "string",
        "documentation": "Type level: the site's FINESS",
    },
    {
        "name": "legal-finess",
        "use": "in",
        "min": 0,
        "max": "1",
        "type": "string",
        "documentation": "Type level: the legal entity's FINESS (default: the stored site's partOf)",
    },
    {"name": "return", "use": "out", "min": 1, "max": "1", "type": "Parameters"},
]


def _may_see(finess: set[str]) -> bool:
    """A laboratory's own FINESS numbers (legal entity, sites); everything for operators and
    when authorisation is off."""
    principal = current_principal()
    return principal is None or principal.unrestricted or bool(finess & principal.finess)


def _site_finess(record: Record) -> str:
    identifiers = [i for i in record.resource.get("identifier") or [] if isinstance(i, dict)]
    for identifier in identifiers:
        if identifier.get("system") in FINESS_SYSTEMS and identifier.get("value"):
            return identifier["value"]
    raise FhirError.of(
        422,
        "processing",
        f"Organization/{record.id} has no FINESS identifier: no MSSanté mailbox can be looked up",
        f"Organization/{record.id} n'a pas d'identifiant FINESS : aucune BAL MSSanté ne peut être recherchée",
        "Organization.identifier",
    )


def _legal_finess(store, organization: dict) -> str | None:
    part_of = organization.get("partOf")
    if not isinstance(part_of, dict):
        return None
    identifier = part_of.get("identifier")
    if isinstance(identifier, dict) and identifier.get("system") in FINESS_SYSTEMS and identifier.get("value"):
        return identifier["value"]
    parts = str(part_of.get("reference") or "").split("/")
    if len(parts) >= 2 and parts[-2] == "Organization":
        target = store.current("Organization", parts[-1])
        if target is not None and not target.deleted:
            return next(iter(sorted(finess_numbers(target.resource))), None)
    return None


def _stored_site(store, finess: str) -> dict | None:
    keys = business_keys({"resourceType": "Organization", "identifier": [{"system": FINESS, "value": finess}]}, None)
    found = store.find("Organization", {"k": {"$in": keys}, "del": False}, limit=1, projection={"res": 1})
    return found[0]["res"] if found else None


def _finess_parameter(call: OperationCall, name: str, required: bool) -> str | None:
    value = call.param(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not is_valid_finess(value.strip()):
        raise FhirError.of(
            400,
            "invalid",
            f"Parameter '{name}' of $mssante-route must be a FINESS number (9 characters, valid check digit)",
            f"Le paramètre « {name} » de $mssante-route doit être un numéro FINESS (9 caractères, clé valide)",
            name,
        )
    return value.strip()


def _unknown_finess(finess: str) -> FhirError:
    return FhirError.of(
        404,
        "not-found",
        f"No Organization with FINESS {finess} is known",
        f"Aucune Organization de FINESS {finess} n'est connue",
        "finess",
    )


def _route_parameters(route) -> dict:
    parameters = [{"name": "site-finess", "valueString": route.site_finess}]
    if route.legal_finess:
        parameters.append({"name": "legal-finess", "valueString": route.legal_finess})
    if route.address:
        parameters += [
            {"name": "address", "valueString": route.address},
            {"name": "level", "valueCode": route.level},
        ]
    else:
        parameters += [
            {"name": "reason", "valueString": route.reason},
            {"name": "site-count", "valueInteger": route.site_count},
            {"name": "legal-count", "valueInteger": route.legal_count},
        ]
    return {"resourceType": "Parameters", "parameter": parameters}


def _route(site: str, legal: str | None) -> dict:
    settings = current_app.config["SETTINGS"]
    directory = mailboxes.connect(settings.mongodb_uri, settings.mongodb_db)
    return _route_parameters(directory.route(site, legal))


@operation(
    "mssante-route",
    types=("Organization",),
    instance_types=("Organization",),
    description="Where certificates of this laboratory site's patients without mobile or e-mail go: "
    "the MSSanté mailbox stamped @SIDEP of the site or of its legal entity, or why none.",
    parameters=PARAMETERS,
)
def mssante_route(call: OperationCall):
    if call.level == "instance":
        record = call.store.read("Organization", call.resource_id)
        if not _may_see(finess_numbers(record.resource)):
            raise hidden("Organization", record.id, record)
        return _route(_site_finess(record), _legal_finess(call.store, record.resource))
    site = _finess_parameter(call, "finess", required=True)
    legal = _finess_parameter(call, "legal-finess", required=False)
    if not _may_see({site}) or (legal and not _may_see({legal})):
        raise _unknown_finess(site if not _may_see({site}) else legal)
    if legal is None:
        stored = _stored_site(call.store, site)
        legal = _legal_finess(call.store, stored) if stored else None
    return _route(site, legal)

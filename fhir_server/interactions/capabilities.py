"""capabilities: GET [base]/metadata — built from the same registries the server dispatches on,
so it lists exactly what is supported."""

from __future__ import annotations

from functools import lru_cache

from operations import OPERATIONS

from ..context import settings
from ..http import fhir_response
from ..resources import READ_ONLY_TYPES, SUPPORTED_TYPES
from ..search.registry import parameters_for

SOFTWARE_VERSION = "0.1.0"
WRITE_INTERACTIONS = ("create", "update", "patch", "delete")
READ_INTERACTIONS = ("read", "vread", "history-instance", "history-type", "search-type")
COMMON_PARAMETERS = [
    {"name": "_id", "type": "token"},
    {"name": "_lastUpdated", "type": "date"},
]
RESULT_PARAMETERS = ["_count", "_sort", "_include", "_revinclude", "_summary", "_total", "_elements", "_has"]


def capabilities():
    config = settings()
    return fhir_response(capability_statement(config.base_url, config.token_endpoint if config.auth_enabled else None))


@lru_cache(maxsize=4)
def capability_statement(base_url: str, token_url: str | None = None) -> dict:
    statement = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-22",
        "publisher": "SI-DEP open-source platform",
        "kind": "instance",
        "software": {"name": "sidep-fhir-server", "version": SOFTWARE_VERSION},
        "implementation": {"description": "SI-DEP national screening results platform", "url": base_url},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [
            {
                "mode": "server",
                "documentation": "Result parameters supported on every search: "
                + ", ".join(RESULT_PARAMETERS)
                + ". PATCH takes a JSON Patch (application/json-patch+json), on an instance"
                " or conditionally on search criteria.",
                "resource": [_resource(rtype) for rtype in SUPPORTED_TYPES],
                "interaction": [{"code": "transaction"}, {"code": "batch"}, {"code": "history-system"}],
                "operation": [_operation(op) for op in OPERATIONS.values() if op.system],
            }
        ],
    }
    if token_url:
        statement["rest"][0]["security"] = _security(token_url)
    return statement


def _security(token_url: str) -> dict:
    """OAuth2 (SMART Backend Services): where clients get their bearer tokens."""
    return {
        "service": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                        "code": "SMART-on-FHIR",
                    }
                ]
            }
        ],
        "extension": [
            {
                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": [{"url": "token", "valueUri": token_url}],
            }
        ],
        "description": "OAuth2 client credentials (client secret or private_key_jwt), SMART scopes; "
        "every endpoint but /metadata needs a bearer token.",
    }


def _resource(rtype: str) -> dict:
    interactions = READ_INTERACTIONS + (() if rtype in READ_ONLY_TYPES else WRITE_INTERACTIONS)
    params = [{"name": p.code, "type": p.type, "documentation": p.expression} for p in parameters_for(rtype).values()]
    ops = [_operation(op) for op in OPERATIONS.values() if rtype in op.types or rtype in op.instance_types]
    entry = {
        "type": rtype,
        "interaction": [{"code": code} for code in interactions],
        "versioning": "versioned-update",
        "readHistory": True,
        "updateCreate": True,
        "conditionalCreate": rtype not in READ_ONLY_TYPES,
        "conditionalRead": "not-match",
        "conditionalUpdate": rtype not in READ_ONLY_TYPES,
        "conditionalDelete": "single",
        "searchInclude": [f"{rtype}:{p.code}" for p in parameters_for(rtype).values() if p.type == "reference"],
        "searchRevInclude": _revincludes(rtype),
        "searchParam": COMMON_PARAMETERS + params,
    }
    if ops:
        entry["operation"] = ops
    return entry


def _revincludes(rtype: str) -> list[str]:
    return [
        f"{source}:{p.code}"
        for source in SUPPORTED_TYPES
        for p in parameters_for(source).values()
        if p.type == "reference" and (not p.target or rtype in p.target)
    ]


def _operation(op) -> dict:
    return {"name": op.name, "definition": f"http://sidep.example.fr/fhir/OperationDefinition/{op.name}"}

"""`$aggregates` at the system level: tests, positives and positivity per sampling day, département
and age class, in the layout of Santé publique France's `sp-pos-quot-dep` file
(fhir_server/aggregates.py says what is counted).

    GET [base]/$aggregates?_format=csv|json&from=YYYY-MM-DD&to=YYYY-MM-DD&test-type=naat&dep=75

- CSV (`_format=csv` or `text/csv`, or `Accept: text/csv`): `text/csv; charset=utf-8`, a file
  named as the public one (`sp-pos-quot-dep-YYYY-MM-DD-HHhMM.csv`), columns `dep;jour;P;T;cl_age90`;
- JSON (the default, `_format=json`): `application/json`, the query and the rows with
  `positivity` (100 × P / T).
For public health and operators only (a laboratory, prescriber or DMP connector: 403), with a
token that may read DiagnosticReport (the counts are made of results). Every call, refused or
not, leaves an AuditEvent (the operation is `audited`), its query as the entity.
"""

from __future__ import annotations

import orjson
from flask import current_app

from fhir_server import aggregates
from fhir_server.auth.policy import require_public_health
from fhir_server.auth.principal import current_principal
from fhir_server.http import private_response
from fhir_server.outcome import FhirError
from fhir_server.storage.pseudonymised import PseudonymisedRecords

from .registry import OperationCall, operation

QUERY_PARAMETERS = ("from", "to", "test-type", "dep")
FORMATS = {
    "csv": "csv",
    "text/csv": "csv",
    "json": "json",
    "application/json": "json",
    "application/fhir+json": "json",
}
PARAMETERS = [
    {"name": "from", "use": "in", "min": 0, "max": "1", "type": "date", "documentation": "First sampling day"},
    {"name": "to", "use": "in", "min": 0, "max": "1", "type": "date", "documentation": "Last sampling day (today)"},
    {
        "name": "test-type",
        "use": "in",
        "min": 0,
        "max": "1",
        "type": "code",
        "documentation": "naat | antigen | serology (default: all, summed)",
    },
    {"name": "dep", "use": "in", "min": 0, "max": "1", "type": "string", "documentation": "Département code"},
    {"name": "return", "use": "out", "min": 1, "max": "1", "type": "Binary", "documentation": "CSV or JSON"},
]


@operation(
    "aggregates",
    system=True,
    audited=True,
    description="Tests, positives and positivity per sampling day, département and age class "
    "(Santé publique France's sp-pos-quot-dep layout), as CSV or JSON.",
    parameters=PARAMETERS,
)
def aggregates_operation(call: OperationCall):
    require_public_health(
        current_principal(),
        "$aggregates is for public health and platform operators",
        "$aggregates est réservée à la santé publique et aux opérateurs de la plateforme",
        "DiagnosticReport",
    )
    output = _format(call)
    query = aggregates.parse_query(_query_values(call), current_app.config["SETTINGS"].aggregates_max_days)
    table = aggregates.rows(PseudonymisedRecords(call.store.db), query)
    if output == "csv":
        body = aggregates.to_csv(table).encode("utf-8")
        return private_response(body, "text/csv; charset=utf-8", aggregates.filename(), attachment=True)
    return private_response(orjson.dumps(aggregates.to_json(table, query)), "application/json; charset=utf-8")


def _query_values(call: OperationCall) -> dict[str, str | None]:
    """Each parameter once at most, and no other (a misspelt one would silently widen the query)."""
    for name, values in call.parameters.items():
        if name not in (*QUERY_PARAMETERS, "_format"):
            raise FhirError.of(
                400,
                "not-supported",
                f"$aggregates has no parameter '{name}' (it takes {', '.join(QUERY_PARAMETERS)}, _format)",
                f"$aggregates n'a pas de paramètre « {name} » (elle prend {', '.join(QUERY_PARAMETERS)}, _format)",
                name,
            )
        if len(values) > 1:
            raise FhirError.of(
                400,
                "invalid",
                f"Parameter '{name}' of $aggregates is given more than once",
                f"Le paramètre « {name} » de $aggregates est donné plusieurs fois",
                name,
            )
    return {name: call.param(name) for name in QUERY_PARAMETERS}


def _format(call: OperationCall) -> str:
    refusal = (
        "$aggregates answers CSV or JSON, not '{value}'",
        "$aggregates répond en CSV ou en JSON, pas « {value} »",
    )
    chosen = call.format_asked(("_format",), FORMATS, refusal, "_format")
    if chosen:
        return chosen
    accept = call.request.headers.get("Accept", "") if call.request is not None else ""
    return "csv" if "text/csv" in accept.lower() else "json"

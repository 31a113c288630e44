"""`$pseudonymised-feed` (system level, GET): public health's real-time feed of results.

    GET [base]/$pseudonymised-feed?after=<position>&_count=<n>

Answers `application/json`: `{"after": <position asked>, "next": <position to ask next>,
"more": <true when more entries wait>, "entries": [...]}`; each entry is `{"position", "result_key",
"state", "at", ...the record's fields}` (pseudonyms.published, as `$export` gives them) (fhir_server/pseudonyms.py RECORD_FIELDS; none for a
`withdrawn` result). Positions come in commit order without gaps, so a consumer that keeps `next`
and asks again never misses an entry nor gets one twice; a result appears again when it changes
(same `result_key`: replace the earlier entry), or as `withdrawn` (count it no more).
`_count` defaults to FEED_PAGE_SIZE, at most FEED_MAX_PAGE_SIZE.

For public health and operators (DiagnosticReport search in the token's scopes); others 403.
Each call, refused ones included, is an AuditEvent (the operation is `audited`: the feed is
personal data, pseudonymised), its query as the entity.
"""

from __future__ import annotations

import json

from flask import current_app

from fhir_server.auth.policy import require_public_health
from fhir_server.auth.principal import current_principal
from fhir_server.http import private_response
from fhir_server.outcome import FhirError
from fhir_server.pseudonyms import published
from fhir_server.search.dates import instant
from fhir_server.storage.pseudonymised import PseudonymisedRecords

from .registry import OperationCall, operation

PARAMETERS = [
    {"name": "after", "use": "in", "min": 0, "max": "1", "type": "integer", "documentation": "the last position read"},
    {"name": "_count", "use": "in", "min": 0, "max": "1", "type": "integer", "documentation": "entries at most"},
]


@operation(
    "pseudonymised-feed",
    system=True,
    audited=True,
    description="Public health's feed of pseudonymised results, in commit order, after a position.",
    parameters=PARAMETERS,
)
def pseudonymised_feed(call: OperationCall):
    require_public_health(
        current_principal(),
        "The pseudonymised feed is for public health agencies and operators",
        "Le flux pseudonymisé est réservé aux agences de santé publique et aux opérateurs",
        "DiagnosticReport",
        "s",
    )
    settings = current_app.config["SETTINGS"]
    after = _integer(call, "after", 0, None)
    count = _integer(call, "_count", settings.feed_page_size, settings.feed_max_page_size)
    records = PseudonymisedRecords(call.store.db)
    entries = records.after(after, count + 1)
    more = len(entries) > count
    entries = entries[:count]
    body = {
        "after": after,
        "next": entries[-1]["_id"] if entries else after,
        "more": more,
        "entries": [shown(entry) for entry in entries],
    }
    return private_response(json.dumps(body, ensure_ascii=False), "application/json")


def shown(entry: dict) -> dict:
    return published(entry["_id"], entry["result"], entry["state"], entry["rec"], instant(entry["at"]))


def _integer(call: OperationCall, name: str, default: int, maximum: int | None) -> int:
    value = call.param(name)
    if value is None:
        return default
    text = str(value).strip()
    lowest = 0 if name == "after" else 1
    if not text.isdigit() or int(text) < lowest:
        raise FhirError.of(
            400,
            "invalid",
            f"{name} must be a whole number of at least {lowest}, not '{text[:40]}'",
            f"{name} doit être un entier d'au moins {lowest}, pas « {text[:40]} »",
            name,
        )
    number = int(text)
    if maximum is not None and number > maximum:
        raise FhirError.of(
            400,
            "too-costly",
            f"{name} is at most {maximum}",
            f"{name} vaut au plus {maximum}",
            name,
        )
    return number

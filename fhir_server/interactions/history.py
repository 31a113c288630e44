"""history: GET [base]/_history, [base]/[type]/_history, [base]/[type]/[id]/_history,
with _count, _since and keyset paging (newest first)."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlencode

from flask import request

from ..context import settings, store
from ..http import fhir_response
from ..outcome import FhirError
from ..resources import require_supported
from ..search.dates import DateFormatError, instant, parse_range
from ..storage import Record
from .paging import decode_cursor, encode_cursor

STATUS = {"POST": "201 Created", "PUT": "200 OK", "DELETE": "204 No Content"}


def system_history():
    return _history(None, None)


def type_history(rtype: str):
    require_supported(rtype)
    return _history(rtype, None)


def instance_history(rtype: str, rid: str):
    require_supported(rtype)
    if store().current(rtype, rid) is None:
        store().read(rtype, rid)  # raises the 404
    return _history(rtype, rid)


def _history(rtype: str | None, rid: str | None):
    config = settings()
    count = _count(request.args.get("_count"), config.default_page_size, config.max_history_page_size)
    since = _since(request.args.get("_since"))
    before = None
    if request.args.get("_cursor"):
        state = decode_cursor(
            request.args["_cursor"],
            lambda state: isinstance(state.get("ts"), datetime) and isinstance(state.get("key"), str),
        )
        before = (state["ts"], state["key"])
    records = store().history(rtype, rid, since, before, count + 1)
    more = len(records) > count
    records = records[:count]
    path = "/".join(p for p in (config.base_url, rtype, rid, "_history") if p)
    params = [(k, v) for k, v in request.args.items(multi=True) if k != "_cursor"]
    links = [{"relation": "self", "url": f"{path}?{urlencode(params)}" if params else path}]
    if more:
        cursor = encode_cursor({"ts": records[-1].last_updated, "key": records[-1].key})
        links.append({"relation": "next", "url": f"{path}?{urlencode(params + [('_cursor', cursor)])}"})
    bundle = {"resourceType": "Bundle", "type": "history", "link": links}
    if before is None and not more:
        bundle["total"] = len(records)
    if records:  # FHIR arrays are never empty
        bundle["entry"] = [_entry(r) for r in records]
    return fhir_response(bundle)


def _entry(record: Record) -> dict:
    base = settings().base_url
    method = record.method or "PUT"
    entry: dict = {"fullUrl": f"{base}/{record.type}/{record.id}"}
    if record.resource is not None:
        entry["resource"] = record.resource
    entry["request"] = {"method": method, "url": record.type if method == "POST" else f"{record.type}/{record.id}"}
    entry["response"] = {
        "status": STATUS.get(method, "200 OK"),
        "etag": record.etag,
        "lastModified": instant(record.last_updated),
    }
    return entry


def _count(raw: str | None, default: int, maximum: int) -> int:
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or int(raw) == 0:
        raise FhirError.of(
            400,
            "invalid",
            f"_count '{raw}' is not a positive integer",
            f"_count '{raw}' n'est pas un entier positif",
            "_count",
        )
    return min(int(raw), maximum)


def _since(raw: str | None):
    if raw is None:
        return None
    try:
        return parse_range(raw)[0]
    except DateFormatError as exc:
        raise FhirError.of(
            400, "invalid", f"_since: {exc}", f"_since : '{raw}' n'est pas un instant valide", "_since"
        ) from None

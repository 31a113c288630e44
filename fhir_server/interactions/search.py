"""search: GET [base]/[type]?params and POST [base]/[type]/_search."""

from __future__ import annotations

from urllib.parse import urlencode

from flask import request

from ..context import plan_builder, settings, store
from ..http import fhir_response, lang, prefer
from ..outcome import operation_outcome
from ..resources import require_supported
from ..search.query import SearchPlan
from ..storage.conditions import after_row, all_of, referring
from .elements import shape
from .paging import decode_cursor, encode_cursor, reverse, sort_keys, sort_values

PROJECTION = {"res": 1, "v": 1, "ts": 1, "o": 1}


def search(rtype: str):
    require_supported(rtype)
    pairs = list(request.args.items(multi=True))
    if request.method == "POST":
        pairs += list(request.form.items(multi=True))
    plan = plan_builder(strict=prefer("handling") == "strict").build(rtype, pairs)
    return fhir_response(run(plan))


def run(plan: SearchPlan) -> dict:
    db = store()
    rtype = plan.resource_type
    if plan.summary == "count":
        return _bundle(plan, [], db.count(rtype, plan.filter), None, None)
    cursor = (
        decode_cursor(
            plan.cursor, lambda state: state.get("d") in ("n", "p") and sort_keys(state.get("k"), len(plan.sort))
        )
        if plan.cursor
        else None
    )
    backwards = bool(cursor and cursor.get("d") == "p")
    sort = reverse(plan.sort) if backwards else plan.sort
    query = plan.filter if cursor is None else all_of(plan.filter, after_row(sort, cursor["k"]))
    projection = dict(PROJECTION, **{f"s.{i.param}": 1 for i in plan.includes})
    docs = db.find(rtype, query, sort, plan.count + 1, projection) if plan.count else []
    more = len(docs) > plan.count
    docs = docs[: plan.count]
    if backwards:
        docs.reverse()
    has_next = (more and not backwards) or backwards
    has_previous = (cursor is not None and not backwards) or (backwards and more)
    next_link = encode_cursor({"d": "n", "k": sort_values(docs[-1], plan.sort)}) if docs and has_next else None
    prev_link = encode_cursor({"d": "p", "k": sort_values(docs[0], plan.sort)}) if docs and has_previous else None
    total = None
    if plan.total == "accurate" or (plan.count == 0 and plan.total != "none"):
        total = db.count(rtype, plan.filter)
    elif cursor is None and not more and plan.total != "none":
        total = len(docs)
    entries = [_entry(rtype, d["_id"], d["res"], "match", plan) for d in docs]
    entries += _included(plan, docs)
    return _bundle(plan, entries, total, next_link, prev_link)


def _entry(rtype: str, rid: str, resource: dict, mode: str, plan: SearchPlan) -> dict:
    args = {"_summary": plan.summary} if plan.summary else {}
    if plan.elements:
        args["_elements"] = ",".join(plan.elements)
    return {
        "fullUrl": f"{settings().base_url}/{rtype}/{rid}",
        "resource": shape(resource, args),
        "search": {"mode": mode},
    }


def _included(plan: SearchPlan, docs: list[dict]) -> list[dict]:
    if not docs or not (plan.includes or plan.revincludes):
        return []
    db = store()
    limit = settings().max_include_results
    seen = {f"{plan.resource_type}/{d['_id']}" for d in docs}
    wanted: dict[str, set[str]] = {}
    for include in plan.includes:
        for doc in docs:
            for key in (doc.get("s") or {}).get(include.param, []):
                target, _, rid = key.partition("/")
                if rid and (include.target_type in (None, target)) and f"{target}/{rid}" not in seen:
                    wanted.setdefault(target, set()).add(rid)
    entries = []
    for target, ids in wanted.items():
        if target in db.resource_types:
            for record in db.fetch_many(target, sorted(ids)[:limit]):
                seen.add(f"{target}/{record.id}")
                entries.append(_entry(target, record.id, record.resource, "include", plan))
    keys = [f"{plan.resource_type}/{d['_id']}" for d in docs]
    for include in plan.revincludes:
        found = db.find(include.source_type, referring(include.param, keys), [("_id", 1)], limit, {"res": 1})
        for doc in found:
            key = f"{include.source_type}/{doc['_id']}"
            if key not in seen:
                seen.add(key)
                entries.append(_entry(include.source_type, doc["_id"], doc["res"], "include", plan))
    return entries[:limit]


def _bundle(
    plan: SearchPlan, entries: list[dict], total: int | None, next_cursor: str | None, prev_cursor: str | None
) -> dict:
    base = f"{settings().base_url}/{plan.resource_type}"
    # links carry the page size in force (a capped _count as its capped value, so following a
    # link does not repeat the warning)
    params = [(n, v) for n, v in plan.self_params if n != "_count"]
    if plan.count != settings().default_page_size or len(params) < len(plan.self_params):
        params.append(("_count", str(plan.count)))
    this_page = params + [("_cursor", plan.cursor)] if plan.cursor else params
    links = [{"relation": "self", "url": f"{base}?{urlencode(this_page)}"}]
    if next_cursor:
        links.append({"relation": "next", "url": f"{base}?{urlencode(params + [('_cursor', next_cursor)])}"})
    if prev_cursor:
        links.append({"relation": "previous", "url": f"{base}?{urlencode(params + [('_cursor', prev_cursor)])}"})
    bundle = {"resourceType": "Bundle", "type": "searchset"}
    if total is not None:
        bundle["total"] = total
    bundle["link"] = links
    if plan.warnings:
        entries = entries + [{"resource": operation_outcome(plan.warnings, lang()), "search": {"mode": "outcome"}}]
    if entries:
        bundle["entry"] = entries
    return bundle

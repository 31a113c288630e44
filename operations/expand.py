"""ValueSet/$expand (type and instance level), with text filter (accent- and case-insensitive) and paging."""

from __future__ import annotations

from terminology.service import get_service

from ._terminology_params import display_language, int_param, value_set_url
from .registry import operation

PARAMETERS = [
    {"name": "url", "use": "in", "min": 0, "max": "1", "type": "uri"},
    {"name": "filter", "use": "in", "min": 0, "max": "1", "type": "string"},
    {"name": "count", "use": "in", "min": 0, "max": "1", "type": "integer"},
    {"name": "offset", "use": "in", "min": 0, "max": "1", "type": "integer"},
    {"name": "displayLanguage", "use": "in", "min": 0, "max": "1", "type": "code"},
    {"name": "return", "use": "out", "min": 1, "max": "1", "type": "ValueSet"},
]


@operation(
    "expand",
    types=("ValueSet",),
    instance_types=("ValueSet",),
    parameters=PARAMETERS,
    description="Expand a value set (filter on code and displays in English and French; count/offset paging)",
)
def expand(call):
    service = get_service()
    url = value_set_url(call, service)
    text = call.param("filter")
    return service.expand(
        url,
        filter=str(text) if text else None,
        count=int_param(call, "count"),
        offset=int_param(call, "offset"),
        lang=display_language(call),
    )

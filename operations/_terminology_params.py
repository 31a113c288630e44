"""Shared helpers for the terminology operations ($lookup, $validate-code, $expand)."""

from __future__ import annotations

from fhir_server.outcome import FhirError


def display_language(call) -> str:
    """displayLanguage parameter (e.g. 'fr-FR' -> 'fr'), else the request's language."""
    requested = call.param("displayLanguage") or call.lang or "en"
    return str(requested).split("-")[0].lower()


def required_param(call, name: str, fr_name: str | None = None):
    value = call.param(name)
    if value in (None, ""):
        raise FhirError.of(
            400,
            "required",
            f"Parameter '{name}' is required",
            f"Le paramètre « {fr_name or name} » est obligatoire",
            name,
        )
    return value


def int_param(call, name: str) -> int | None:
    value = call.param(name)
    if value in (None, ""):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = -1
    if number < 0:
        raise FhirError.of(
            400,
            "invalid",
            f"Parameter '{name}' must be a non-negative integer",
            f"Le paramètre « {name} » doit être un entier positif ou nul",
            name,
        )
    return number


def value_set_url(call, service) -> str:
    """The value set a ValueSet-level call is about: URL parameter, or the instance's id."""
    from terminology.service import UnknownValueSet

    if call.level == "instance":
        try:
            return service.value_set(call.resource_id)["url"]
        except UnknownValueSet:
            if call.store is None:
                raise FhirError.of(
                    404,
                    "not-found",
                    f"ValueSet/{call.resource_id} is not known",
                    f"ValueSet/{call.resource_id} est inconnu",
                ) from None
            return call.store.read("ValueSet", call.resource_id).resource["url"]
    url = required_param(call, "url")
    url = str(url).split("|")[0]
    if not service.has_value_set(url):
        raise FhirError.of(404, "not-found", f"Unknown value set {url}", f"Jeu de valeurs inconnu {url}", "url")
    return url


def parameters(*pairs) -> dict:
    """Parameters resource from (name, valueKey, value) triples, skipping None values."""
    return {
        "resourceType": "Parameters",
        "parameter": [{"name": name, key: value} for name, key, value in pairs if value is not None],
    }

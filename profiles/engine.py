"""The profile engine: applies the SI-DEP StructureDefinitions (profiles/*.json) to resources.

Data-driven: each differential element is compiled once into a `Rule` (cardinality, allowed choice types,
reference targets, terminology binding, fixed/pattern value, named validators); validating a resource is a
loop over the rules of its profile. Issues carry FHIRPath expressions with list indexes,
e.g. `Patient.telecom[1].value`.

The write path calls, in this order:
    issues = validate_for_write(resource)        # base R4 parsing + profile; refuse on any error
    stored = normalise_resource(resource)        # E.164 phones, current FINESS system
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

from fhir_server.outcome import Issue
from terminology.service import UnknownValueSet, french_title

from .base_validation import reference_type
from .validators import FINESS, FINESS_OLD, VALIDATORS, phone_to_e164

PROFILE_DIR = Path(__file__).resolve().parent
_CODED_BINDING_STRENGTHS = {"required": "error", "extensible": "warning"}  # preferred/example: advice only


@dataclass(frozen=True)
class Rule:
    element: str  # "Patient.name.given"
    parent: tuple[str, ...]  # ("name",): where the element lives, from the resource root
    name: str | None  # "given"; for a choice "value" (from value[x]); None for the root element
    choice: bool
    min: int
    max: int | None  # None = unbounded
    types: tuple[str, ...]  # allowed choice suffixes ("CodeableConcept", "Quantity"), empty = any
    targets: frozenset  # allowed reference target types, empty = any
    binding: tuple[str, str] | None  # (strength, value set URL)
    fixed: tuple[str, object] | None  # ("fixed" | "pattern", value)
    validators: tuple  # ((key, function), ...)


@dataclass(frozen=True)
class CompiledProfile:
    url: str
    type: str
    title: str
    rules: tuple[Rule, ...]


# --- compiling StructureDefinitions ----------------------------------------------------------------


def _max(value) -> int | None:
    return None if value in (None, "*") else int(value)


def _fixed_or_pattern(element: dict):
    for key, value in element.items():
        if key.startswith("fixed") or key.startswith("pattern"):
            return ("fixed" if key.startswith("fixed") else "pattern", value)
    return None


def _targets(element: dict) -> frozenset:
    return frozenset(
        profile.rsplit("/", 1)[-1]
        for t in element.get("type", [])
        if t.get("code") == "Reference"
        for profile in t.get("targetProfile", [])
    )


def _validators(element: dict, sd_url: str) -> tuple:
    found = []
    for constraint in element.get("constraint", []):
        key = constraint["key"]
        if key not in VALIDATORS:  # fail at load, not on the first write that meets it
            raise ValueError(f"{sd_url}: {element['path']} names unknown validator {key!r}")
        found.append((key, VALIDATORS[key]))
    return tuple(found)


def compile_rule(element: dict, resource_type: str, sd_url: str, terminology=None) -> Rule:
    segments = element["path"].split(".")
    if segments[0] != resource_type:
        raise ValueError(f"{sd_url}: element {element['path']} is not in {resource_type}")
    name = segments[-1] if len(segments) > 1 else None
    choice = bool(name and name.endswith("[x]"))
    binding = element.get("binding")
    binding_pair = (
        (binding["strength"], binding["valueSet"].split("|")[0]) if binding and binding.get("valueSet") else None
    )
    if binding_pair and terminology is not None and not terminology.has_value_set(binding_pair[1]):
        raise ValueError(f"{sd_url}: {element['path']} is bound to unknown value set {binding_pair[1]}")
    return Rule(
        element=element["path"],
        parent=tuple(segments[1:-1]) if name else (),
        name=name[:-3] if choice else name,
        choice=choice,
        min=int(element.get("min", 0)),
        max=_max(element.get("max")),
        types=tuple(t["code"][0].upper() + t["code"][1:] for t in element.get("type", [])) if choice else (),
        targets=_targets(element),
        binding=binding_pair,
        fixed=_fixed_or_pattern(element),
        validators=_validators(element, sd_url),
    )


def compile_profile(sd: dict, terminology=None) -> CompiledProfile:
    if sd.get("resourceType") != "StructureDefinition" or not sd.get("type"):
        raise ValueError("not a StructureDefinition with a type")
    rules = tuple(compile_rule(e, sd["type"], sd["url"], terminology) for e in sd["differential"]["element"])
    return CompiledProfile(sd["url"], sd["type"], sd.get("title") or sd["name"], rules)


class ProfileRegistry:
    """Profiles by canonical URL, and the default profile for each resource type."""

    def __init__(self, terminology=None):
        self.terminology = terminology
        self.by_url: dict[str, CompiledProfile] = {}
        self.default_for_type: dict[str, CompiledProfile] = {}
        self.definitions: dict[str, dict] = {}

    def register(self, sd: dict, default: bool = False) -> CompiledProfile:
        profile = compile_profile(sd, self.terminology)
        self.by_url[profile.url] = profile
        self.definitions[profile.url] = sd
        if default or profile.type not in self.default_for_type:
            self.default_for_type[profile.type] = profile
        return profile

    def load_directory(self, directory: Path = PROFILE_DIR) -> "ProfileRegistry":
        for path in sorted(directory.glob("*.json")):
            with path.open(encoding="utf-8") as handle:
                self.register(json.load(handle), default=True)
        return self


_registry: ProfileRegistry | None = None
_registry_lock = threading.Lock()


def _terminology():
    from terminology.service import get_service

    return get_service()


def registry() -> ProfileRegistry:
    global _registry
    if _registry is None:
        with _registry_lock:
            if _registry is None:
                _registry = ProfileRegistry(_terminology()).load_directory()
    return _registry


def reload_profiles() -> ProfileRegistry:
    global _registry
    fresh = ProfileRegistry(_terminology()).load_directory()
    _registry = fresh
    return fresh


def register_profile(sd: dict, default: bool = False) -> CompiledProfile:
    """Add a profile at run time (tests, or a StructureDefinition the server was given)."""
    return registry().register(sd, default)


def all_profiles() -> list[dict]:
    """The StructureDefinition resources, for the server to store and list."""
    return list(registry().definitions.values())


# --- validating ------------------------------------------------------------------------------------


def _items(value, path: str):
    if isinstance(value, list):
        return [(item, f"{path}[{i}]") for i, item in enumerate(value)]
    return [] if value is None else [(value, path)]


def _nodes_at(resource: dict, parent: tuple, root_path: str, cache: dict) -> list:
    """All (node, FHIRPath) at a parent path, memoised per validation (rules share parents)."""
    if parent in cache:
        return cache[parent]
    nodes = []
    for node, path in _nodes_at(resource, parent[:-1], root_path, cache):
        if isinstance(node, dict):
            nodes.extend(_items(node.get(parent[-1]), f"{path}.{parent[-1]}"))
    cache[parent] = nodes
    return nodes


def _children(node: dict, rule: Rule, path: str) -> list:
    """(value, FHIRPath, choice suffix) of the element in one parent node."""
    if not rule.choice:
        return [(value, p, None) for value, p in _items(node.get(rule.name), f"{path}.{rule.name}")]
    prefix, found = rule.name, []
    for key, value in node.items():
        if key.startswith(prefix) and key[len(prefix) : len(prefix) + 1].isupper():
            found.extend((v, p, key[len(prefix) :]) for v, p in _items(value, f"{path}.{key}"))
    return found


def _reference_type(reference: dict) -> str | None:
    text = reference.get("reference")
    named = reference_type(text) if isinstance(text, str) else None
    if named:
        return named
    explicit = reference.get("type")
    return explicit.rsplit("/", 1)[-1] if isinstance(explicit, str) else None


def _matches_pattern(value, pattern) -> bool:
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(_matches_pattern(value.get(k), v) for k, v in pattern.items())
    if isinstance(pattern, list):
        return isinstance(value, list) and all(any(_matches_pattern(v, p) for v in value) for p in pattern)
    return value == pattern


class _Validation:
    """One validation run: the resource, its profile and the issues found."""

    def __init__(self, resource: dict, profile: CompiledProfile, terminology):
        self.resource, self.profile, self.terminology = resource, profile, terminology
        self.root = resource.get("resourceType", profile.type)
        self.issues: list[Issue] = []
        self.cache: dict = {(): [(resource, self.root)]}

    def run(self) -> list[Issue]:
        for rule in self.profile.rules:
            if rule.name is None:
                for _key, check in rule.validators:
                    self.issues += check(self.resource, self.root, self.resource)
                continue
            for node, path in _nodes_at(self.resource, rule.parent, self.root, self.cache):
                if isinstance(node, dict):
                    self.apply(rule, node, path)
        return self.issues

    def apply(self, rule: Rule, node: dict, path: str) -> None:
        children = _children(node, rule, path)
        self.check_cardinality(rule, children, f"{path}.{rule.name}")
        for value, value_path, suffix in children:
            if suffix is not None and rule.types and suffix not in rule.types:
                self.issues.append(
                    Issue(
                        "error",
                        "structure",
                        f"{value_path}: type {suffix} is not allowed here (allowed: {', '.join(rule.types)})",
                        f"{value_path} : le type {suffix} n'est pas autorisé ici (autorisés : {', '.join(rule.types)})",
                        [value_path],
                    )
                )
                continue
            if rule.targets and isinstance(value, dict):
                self.check_reference(rule, value, value_path)
            if rule.binding and value is not None:
                self.check_binding(rule, value, value_path)
            if rule.fixed is not None:
                self.check_fixed(rule, value, value_path)
            for _key, check in rule.validators:
                self.issues += check(value, value_path, self.resource)

    def check_cardinality(self, rule: Rule, children: list, element_path: str) -> None:
        count = len(children)
        if count < rule.min:
            self.issues.append(
                Issue(
                    "error",
                    "required",
                    f"{element_path} is required (at least {rule.min}) by profile '{self.profile.title}'",
                    f"{element_path} est obligatoire (au moins {rule.min}) selon le profil « {self.profile.title} »",
                    [element_path],
                )
            )
        elif rule.max is not None and count > rule.max:
            self.issues.append(
                Issue(
                    "error",
                    "structure",
                    f"{element_path} appears {count} times, at most {rule.max} allowed by profile '{self.profile.title}'",
                    f"{element_path} apparaît {count} fois, au plus {rule.max} selon le profil « {self.profile.title} »",
                    [element_path],
                )
            )

    def check_reference(self, rule: Rule, reference: dict, path: str) -> None:
        target = _reference_type(reference)
        if target is not None and target not in rule.targets:
            allowed = " | ".join(sorted(rule.targets))
            self.issues.append(
                Issue(
                    "error",
                    "structure",
                    f"{path} must refer to {allowed}, not {target}",
                    f"{path} doit référencer {allowed}, pas {target}",
                    [f"{path}.reference"],
                )
            )

    def check_fixed(self, rule: Rule, value, path: str) -> None:
        kind, expected = rule.fixed
        ok = value == expected if kind == "fixed" else _matches_pattern(value, expected)
        if not ok:
            self.issues.append(
                Issue(
                    "error",
                    "value",
                    f"{path} must be {json.dumps(expected, ensure_ascii=False)} ({kind} value)",
                    f"{path} doit valoir {json.dumps(expected, ensure_ascii=False)} (valeur imposée)",
                    [path],
                )
            )

    def check_binding(self, rule: Rule, value, path: str) -> None:
        strength, url = rule.binding
        severity = _CODED_BINDING_STRENGTHS.get(strength)
        if severity is None:
            return
        codings = _codings(value, path)
        if codings is None:  # not a coded type (e.g. valueQuantity under a value[x] binding)
            return

        try:
            matches = [
                (c, p)
                for c, p in codings
                if isinstance(c.get("code"), str) and self.terminology.contains(url, c.get("system"), c["code"])
            ]
        except UnknownValueSet:
            self.issues.append(
                Issue(
                    "warning",
                    "not-supported",
                    f"{path}: value set {url} is not loaded",
                    f"{path} : le jeu de valeurs {url} n'est pas chargé",
                    [path],
                )
            )
            return
        if matches:
            self.check_displays(url, matches)
            return
        self.issues.append(self.unknown_code_issue(severity, url, codings, path))

    def check_displays(self, url: str, matches: list) -> None:
        for coding, coding_path in matches:
            display = coding.get("display")
            concept = self.terminology.contains(url, coding.get("system"), coding["code"])
            if isinstance(display, str) and not concept.matches_display(display):
                self.issues.append(
                    Issue(
                        "warning",
                        "code-invalid",
                        f"Display '{display}' does not match code '{coding['code']}' (expected '{concept.display}')",
                        f"Le libellé « {display} » ne correspond pas au code « {coding['code']} » "
                        f"(attendu « {concept.display_in('fr')} »)",
                        [f"{coding_path}.display"],
                    )
                )

    def unknown_code_issue(self, severity: str, url: str, codings: list, path: str) -> Issue:
        vs = self.terminology.value_set(url)
        title_en = vs.get("title") or url
        title_fr = french_title(vs) or title_en
        shown = ", ".join(f"'{c.get('code')}'" + (f" ({c['system']})" if c.get("system") else "") for c, _ in codings)
        where = codings[0][1] if len(codings) == 1 else path
        if not codings:
            en, fr = (
                f"{path} has no code from the value set '{title_en}'",
                f"{path} ne contient aucun code du jeu de valeurs « {title_fr} »",
            )
        else:
            en = f"Unknown code {shown} at {path}: not in the value set '{title_en}' ({url})"
            fr = (
                f"Code inconnu {shown.replace(chr(39), '')} en {path} : absent du jeu de valeurs « {title_fr} » ({url})"
            )
        return Issue(severity, "code-invalid", en, fr, [where])


def _codings(value, path: str):
    """[(coding-like dict, FHIRPath)] for code / Coding / CodeableConcept values, else None."""
    if isinstance(value, str):
        return [({"code": value}, path)]
    if not isinstance(value, dict):
        return None
    if "coding" in value or ("text" in value and "code" not in value and "value" not in value):
        return [(c, f"{path}.coding[{i}]") for i, c in enumerate(value.get("coding") or []) if isinstance(c, dict)]
    if "code" in value and "value" not in value and "unit" not in value:
        return [(value, path)]
    return None


def profiles_for(resource: dict, profile_url: str | None = None) -> tuple[list[CompiledProfile], list[Issue]]:
    """The profiles a resource is checked against: the one asked for, else the default for its type."""
    reg = registry()
    if profile_url:
        profile = reg.by_url.get(profile_url.split("|")[0])
        if profile is None:
            return [], [
                Issue("error", "not-supported", f"Unknown profile {profile_url}", f"Profil inconnu {profile_url}", [])
            ]
        if profile.type != resource.get("resourceType"):
            return [], [
                Issue(
                    "error",
                    "invalid",
                    f"Profile {profile_url} is for {profile.type}, not {resource.get('resourceType')}",
                    f"Le profil {profile_url} s'applique à {profile.type}, pas à {resource.get('resourceType')}",
                    ["resourceType"],
                )
            ]
        return [profile], []
    default = reg.default_for_type.get(resource.get("resourceType"))
    return ([default] if default else []), []


def validate_resource(resource: dict, lang: str = "en", profile_url: str | None = None) -> list[Issue]:
    """Profile + terminology + validator issues for one resource ([] when it conforms).

    Resource types without an SI-DEP profile pass (the base R4 checks are `parse_errors`). `lang` is accepted
    for symmetry with the HTTP layer: every Issue carries both languages, Issue.to_fhir(lang) picks one.
    """
    if not isinstance(resource, dict):
        return [
            Issue("error", "structure", "A resource must be a JSON object", "Une ressource doit être un objet JSON")
        ]
    profiles, issues = profiles_for(resource, profile_url)
    terminology = registry().terminology
    for profile in profiles:
        issues += _Validation(resource, profile, terminology).run()
    return issues


def validate_for_write(
    resource: dict, lang: str = "en", profile_url: str | None = None, enforce_profiles: bool = True
) -> list[Issue]:
    """Everything a create/update checks: base FHIR R4 parsing, then (when enforced, and only on
    what parses, as the write path does) the SI-DEP profile."""
    from .base_validation import parse_errors

    resource_type = resource.get("resourceType") if isinstance(resource, dict) else None
    issues = parse_errors(resource_type, resource)
    if enforce_profiles and not has_errors(issues):
        issues += validate_resource(resource, lang, profile_url)
    return issues


def has_errors(issues: list[Issue]) -> bool:
    return any(i.severity in ("error", "fatal") for i in issues)


# --- normalising for storage -----------------------------------------------------------------------


def normalise_resource(resource: dict) -> dict:
    """The form the server stores: phones in E.164, FINESS under https://finess.esante.gouv.fr.

    The input is never modified: containers on the path to a change are copied, everything else is shared
    (cheap, and the caller's request body stays as received for audit).
    """
    return _normalise(resource)


def _normalise(node):
    if isinstance(node, list):
        out = None
        for i, item in enumerate(node):
            new = _normalise(item)
            if new is not item:
                out = out if out is not None else list(node)
                out[i] = new
        return out if out is not None else node
    if not isinstance(node, dict):
        return node
    out = _normalised_fields(node)
    for key, value in list((out or node).items()):
        if isinstance(value, (dict, list)):
            new = _normalise(value)
            if new is not value:
                out = out if out is not None else dict(node)
                out[key] = new
    return out if out is not None else node


def _normalised_fields(node: dict) -> dict | None:
    system = node.get("system")
    if system == FINESS_OLD:
        return {**node, "system": FINESS}
    if system in ("phone", "sms") and isinstance(node.get("value"), str):
        e164 = phone_to_e164(node["value"])
        if e164 and e164 != node["value"]:
            return {**node, "value": e164}
    return None

"""OperationOutcome: the one shape every error, warning and informational message takes.

Messages are bilingual (French, English): the request's Accept-Language picks which one goes in
`diagnostics`; the other travels in `details.text` so that nothing is lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Issue:
    """One OperationOutcome.issue. `expression` is FHIRPath (e.g. `Patient.birthDate`)."""

    severity: str  # fatal | error | warning | information
    code: str  # FHIR issue-type code: invalid, required, value, not-found, conflict, ...
    en: str
    fr: str | None = None
    expression: list[str] = field(default_factory=list)

    def to_fhir(self, lang: str = "en") -> dict:
        primary, other = (self.fr or self.en, self.en) if lang == "fr" else (self.en, self.fr)
        issue = {"severity": self.severity, "code": self.code, "diagnostics": primary}
        if other and other != primary:
            issue["details"] = {"text": other}
        if self.expression:
            issue["expression"] = list(self.expression)
        return issue


class FhirError(Exception):
    """Raised anywhere on the request path; turned into an OperationOutcome response."""

    def __init__(self, status: int, issues: list[Issue] | Issue, headers: dict | None = None):
        self.status = status
        self.issues = issues if isinstance(issues, list) else [issues]
        self.headers = headers or {}
        self.about: tuple[str, str] | None = None  # the (type, id) written that the error is about
        self.reference: str | None = None  # the reference value at fault, if one is
        super().__init__("; ".join(i.en for i in self.issues))

    @classmethod
    def of(
        cls, status: int, code: str, en: str, fr: str | None = None, expression: str | list[str] | None = None
    ) -> "FhirError":
        expr = [expression] if isinstance(expression, str) else (expression or [])
        return cls(status, Issue("error" if status < 500 else "fatal", code, en, fr, expr))


def not_known(rtype: str, rid: str) -> FhirError:
    return FhirError.of(404, "not-found", f"{rtype}/{rid} is not known", f"{rtype}/{rid} est inconnu")


def missing_reference(reference: str) -> tuple[str, str]:
    """What a reference to a resource that is not there (or not there for the writer) is told,
    in English and French: the same words on every write path."""
    return (
        f"the referenced resource '{reference}' does not exist",
        f"la ressource référencée '{reference}' n'existe pas",
    )


def operation_outcome(issues: list[Issue], lang: str = "en") -> dict:
    return {"resourceType": "OperationOutcome", "issue": [i.to_fhir(lang) for i in issues]}

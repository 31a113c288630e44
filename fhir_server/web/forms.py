"""The forms' fields, read and checked with the same validators as the FHIR profiles
(profiles/validators.py: the laboratory guide's rules for phone numbers, e-mail, INS, dates), so
that an error shows next to its field, in French, before anything is sent to the store."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from profiles.validators import (
    check_birth_date,
    check_email,
    check_human_name,
    check_nir,
    check_not_future,
    check_phone,
)

from ..synthetic.generator import PARIS

SEXES = (("female", "Féminin"), ("male", "Masculin"), ("other", "Autre"), ("unknown", "Inconnu"))
RESULTS = (("detected", "Positif (détecté)"), ("not-detected", "Négatif (non détecté)"))


@dataclass
class Checked:
    values: dict
    errors: dict[str, list[str]] = field(default_factory=dict)
    warnings: dict[str, list[str]] = field(default_factory=dict)

    def add(self, name: str, issues) -> None:
        for issue in issues:
            target = self.errors if issue.severity in ("error", "fatal") else self.warnings
            target.setdefault(name, []).append(issue.fr or issue.en)

    def require(self, name: str, label: str) -> bool:
        if not self.values.get(name):
            self.errors.setdefault(name, []).append(f"{label} : champ obligatoire")
            return False
        return True

    @property
    def ok(self) -> bool:
        return not self.errors


def _text(form, name: str) -> str:
    return " ".join((form.get(name) or "").split())


def _date(text: str) -> str:
    """YYYY-MM-DD from a date input, or from JJ/MM/AAAA typed where the browser has no date picker."""
    parts = text.split("/")
    if len(parts) == 3 and all(p.isdigit() for p in parts) and len(parts[2]) == 4:
        return f"{parts[2]}-{int(parts[1]):02d}-{int(parts[0]):02d}"
    return text


def identity(form, checked: Checked | None = None) -> Checked:
    """Identity traits and contact details (the new-result form and the correction form)."""
    values = {
        "family": _text(form, "family"),
        "given": _text(form, "given"),
        "birth_date": _date(_text(form, "birth_date")),
        "sex": _text(form, "sex"),
        "ins": _text(form, "ins").replace(" ", ""),
        "phone": (form.get("phone") or "").strip(),
        "email": (form.get("email") or "").strip(),
    }
    checked = checked or Checked({})
    checked.values.update(values)
    has_family = checked.require("family", "Nom de naissance")
    if checked.require("given", "Prénom(s)") and has_family:
        issues = check_human_name({"family": values["family"], "given": values["given"].split()}, "name")
        checked.add("family", [i for i in issues if i.expression and i.expression[0].endswith(".family")])
        checked.add("given", [i for i in issues if i.expression and ".given" in i.expression[0]])
    if checked.require("birth_date", "Date de naissance"):
        checked.add("birth_date", check_birth_date(values["birth_date"], "birthDate"))
    if values["sex"] not in dict(SEXES):
        checked.errors.setdefault("sex", []).append("Sexe : choisissez une valeur")
    if values["ins"]:
        checked.add("ins", check_nir(values["ins"], "identifier"))
    if values["phone"]:
        checked.add("phone", check_phone(values["phone"], "telecom", mobile_required=True))
    if values["email"]:
        checked.add("email", check_email(values["email"], "telecom"))
    return checked


def result(form, tests: dict, devices: dict, now: datetime | None = None) -> Checked:
    """The new-result form: identity, contact, test, device, result, sampling time."""
    checked = identity(form)
    values = checked.values
    values.update(
        test=_text(form, "test"),
        device=_text(form, "device"),
        result=_text(form, "result"),
        sampled_at=_text(form, "sampled_at"),
    )
    if values["test"] not in tests:
        checked.errors.setdefault("test", []).append("Test : choisissez un test antigénique de la liste")
    if values["device"] and values["device"] not in devices:
        checked.errors.setdefault("device", []).append("Dispositif : choisissez un test de la liste")
    if values["result"] not in dict(RESULTS):
        checked.errors.setdefault("result", []).append("Résultat : choisissez positif ou négatif")
    if checked.require("sampled_at", "Date et heure du prélèvement"):
        moment = sampling_time(values["sampled_at"])
        if moment is None:
            checked.errors.setdefault("sampled_at", []).append(
                "Date et heure du prélèvement : format attendu AAAA-MM-JJ HH:MM"
            )
        else:
            checked.add("sampled_at", check_not_future(moment.isoformat(), "collectedDateTime", now))
            birth = values.get("birth_date")
            if not checked.errors.get("birth_date") and birth and moment.date().isoformat() < birth:
                checked.errors.setdefault("sampled_at", []).append(
                    "Le prélèvement ne peut pas précéder la date de naissance"
                )
    return checked


def sampling_time(text: str) -> datetime | None:
    """A local (Paris) time from a datetime-local input ('2021-07-09T10:30') or typed text."""
    text = text.replace(" ", "T")
    for pattern in ("%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%d/%m/%YT%H:%M"):
        try:
            moment = datetime.strptime(text, pattern)
        except ValueError:
            continue
        return moment.replace(tzinfo=PARIS)
    return None


def now_local() -> str:
    return datetime.now(UTC).astimezone(PARIS).strftime("%Y-%m-%dT%H:%M")


def today() -> date:
    return datetime.now(PARIS).date()

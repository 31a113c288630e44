"""The SI-DEP rule for the citizen portal: a result is shown to a FranceConnect account only when
the account's identity traits match the tested patient's strictly.

The traits and how each is compared (`compare`):

- **family** — the birth family name FranceConnect certifies (`family_name`) against the
  Patient's birth name: the `name` with `use = official` (the SI-DEP profile sends the birth name
  so, `sidep-official-name`), else the first `name`. A usage name (`use = usual`) is never used.
- **given** — all the given names, in order: FranceConnect's space-separated list against the
  official name's `given` list, both joined with spaces (so "Jean-Pierre Marie" sent as one
  element or two compares the same).
- Names are compared *strictly on letters*, after these foldings only: Unicode NFC; case
  (`casefold`); spaces, hyphens and runs of them are one separator, leading and trailing ones
  dropped ("Jean-Pierre" = "JEAN PIERRE"); apostrophe variants (’ ‘ ʼ ` ´) are "'"; the ligatures
  œ and æ are "oe" and "ae" (ICAO transliteration, as civil status registers write them).
  **Accents are significant**: "Céline" ≠ "Celine", "Hélène" ≠ "Helene" — the guide says
  "strictement", and an accent is a letter of the civil status.
- **birthDate** — the same calendar date. FranceConnect writes unknown parts of a birth date as
  `-01` (a presumed date): it is compared as it is, so a Patient sent with the same presumed
  date matches and one sent with a partial date (`1980-05`, which the SI-DEP profile warns
  against: "a partial one locks the patient out") does not.
- **gender** — FHIR `gender` against FranceConnect's `gender`: male = male, female = female;
  `other`, `unknown` or a missing gender never match.
- **birthPlace** — the INSEE (COG) code of the Patient's birth place (extension
  `http://hl7.org/fhir/StructureDefinition/patient-birthPlace`, `valueAddress.district`): a
  commune code against FranceConnect's `birthplace`, a country code (99xxx) against its
  `birthcountry` (99100 = France, so a commune code also requires `birthcountry` 99100).
  Compared only when both sides know it: the extension is optional in SI-DEP, and FranceConnect
  gives no commune for people born abroad.

Resolution cases when the traits differ (the SI-DEP guide's, as the portal must explain them):

- **A** — nothing matches and nothing nearly matches: the person was perhaps never notified
  (no contact details, or wrong ones): ask the laboratory to correct the contact details and send
  the result again;
- **B** — a Patient nearly matches and carries a mobile or an e-mail (a notification was sent):
  use the personal link of that notification, or ask the laboratory to correct the identity and
  send the dossier again;
- **C** — a Patient nearly matches and has no contact details (no notification, so no link):
  ask the laboratory to correct the identity and send the dossier again.

`find_patients` returns the Patient ids (of every laboratory) that match, and of the ones that
*nearly* match — same birth date and (folded) family name, exactly one trait different — only
their count and the names of the differing traits: nothing else about them may be shown.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from fhir_server.franceconnect import Identity
from fhir_server.search.dates import parse_range
from fhir_server.search.normalize import fold
from fhir_server.storage.conditions import date_condition
from profiles.validators import BIRTH_PLACE_URL

TRAITS = ("family", "given", "birthDate", "gender", "birthPlace")
FRANCE = "99100"  # COG code of France among countries
DEFAULT_CANDIDATES = 50  # IDENTITY_MATCH_CANDIDATES: Patients read per login at most

_APOSTROPHES = str.maketrans({"’": "'", "‘": "'", "ʼ": "'", "`": "'", "´": "'"})
_LIGATURES = {"œ": "oe", "æ": "ae"}
_SEPARATORS = re.compile(r"[\s\-‐‑–]+")


@dataclass(frozen=True)
class Match:
    matches: bool
    differs: list[str] = field(default_factory=list)  # among TRAITS, in that order
    case: str | None = None  # None when it matches; else "B" or "C" (see the module docstring)


@dataclass(frozen=True)
class Found:
    """What the portal may know: the matching Patients, and only a count and trait names for
    the Patients that nearly match."""

    patients: list[str]
    near_matches: int = 0
    near_differs: list[str] = field(default_factory=list)  # the traits that differ, among TRAITS
    case: str | None = None  # None when patients were found; else "A", "B" or "C"


def normalise_name(text: str) -> str:
    """A name folded as the rule says: case, separators, apostrophes, ligatures; accents kept."""
    folded = unicodedata.normalize("NFC", text).translate(_APOSTROPHES).casefold()
    for ligature, letters in _LIGATURES.items():
        folded = folded.replace(ligature, letters)
    return _SEPARATORS.sub(" ", folded).strip()


def official_name(patient: dict) -> dict:
    names = [n for n in patient.get("name") or [] if isinstance(n, dict)]
    return next((n for n in names if n.get("use") == "official"), names[0] if names else {})


def birth_place_code(patient: dict) -> str | None:
    for extension in patient.get("extension") or []:
        if isinstance(extension, dict) and extension.get("url") == BIRTH_PLACE_URL:
            district = (extension.get("valueAddress") or {}).get("district")
            return district.strip().upper() if isinstance(district, str) and district.strip() else None
    return None


def _same_birth_place(identity: Identity, code: str | None) -> bool:
    if code is None:
        return True  # not known on the Patient's side: not compared
    if code.startswith("99"):
        return not identity.birthcountry or code == identity.birthcountry
    if identity.birthcountry and identity.birthcountry != FRANCE:
        return False  # born in a French commune by the Patient, abroad by the civil status
    return not identity.birthplace or code == identity.birthplace.upper()


def differing_traits(identity: Identity, patient: dict) -> list[str]:
    name = official_name(patient)
    given = [g for g in name.get("given") or [] if isinstance(g, str)]
    same = {
        "family": normalise_name(identity.family_name) == normalise_name(str(name.get("family") or "")),
        "given": bool(given) and normalise_name(" ".join(identity.given_names)) == normalise_name(" ".join(given)),
        "birthDate": patient.get("birthDate") == identity.birthdate.isoformat(),
        "gender": identity.gender in ("male", "female") and patient.get("gender") == identity.gender,
        "birthPlace": _same_birth_place(identity, birth_place_code(patient)),
    }
    return [trait for trait in TRAITS if not same[trait]]


def was_notifiable(patient: dict) -> bool:
    """Did the laboratory send a mobile or an e-mail (so the platform sent a notification)?"""
    return any(
        isinstance(t, dict) and t.get("value") and t.get("system") in ("phone", "sms", "email")
        for t in patient.get("telecom") or []
    )


def compare(identity: Identity, patient: dict) -> Match:
    differs = differing_traits(identity, patient)
    if not differs:
        return Match(True)
    return Match(False, differs, "B" if was_notifiable(patient) else "C")


def family_spellings(family_name: str) -> list[str]:
    """The search index's folded forms of the spellings the rule holds equal: separators all
    spaces or all hyphens, straight or typographic apostrophes (the index folds neither)."""
    spellings = set()
    for separator in (" ", "-"):
        for apostrophe in ("'", "’"):
            text = _SEPARATORS.sub(separator, family_name.translate(_APOSTROPHES).strip()).replace("'", apostrophe)
            spellings.add(fold(text))
    return sorted(spellings)


def candidate_query(identity: Identity) -> dict:
    """Current Patients with this family name (folded: accents are compared afterwards) and this
    whole birth date, from the search index every write extracts (`s.family`, `s.birthdate`)."""
    lo, hi = parse_range(identity.birthdate.isoformat())
    return {
        "del": False,
        "s.family": {"$in": family_spellings(identity.family_name)},
        **date_condition("s.birthdate", "eq", lo, hi),
    }


def find_patients(store, identity: Identity, limit: int = DEFAULT_CANDIDATES) -> Found:
    """The Patients of every laboratory matching `identity`, and what the near matches allow to
    say. `store` must see every laboratory's Patients (no principal narrowing its reads). At most
    `limit` candidates (same family name and birth date) are read, oldest first: homonyms born
    the same day are few, and a login must not read a whole collection."""
    docs = store.find("Patient", candidate_query(identity), sort=[("_id", 1)], limit=limit, projection={"res": 1})
    patients, near, near_differs, near_notified = [], 0, set(), False
    for doc in docs:
        result = compare(identity, doc["res"])
        if result.matches:
            patients.append(doc["_id"])
        elif len(result.differs) == 1:
            near += 1
            near_differs.update(result.differs)
            near_notified = near_notified or result.case == "B"
    if patients:
        return Found(patients)
    if near:
        return Found([], near, [t for t in TRAITS if t in near_differs], "B" if near_notified else "C")
    return Found([], case="A")

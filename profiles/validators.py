"""Validators for French health identifiers and SI-DEP data-quality rules.

Two layers:
- plain checks (`check_nir(value, path)`, `check_phone(value, path)`, ...) returning a list of `Issue`s
  (empty when the value is fine), usable on their own;
- named validators (`VALIDATORS["sidep-..."]`), the functions a StructureDefinition element constraint
  names by its `key` (see profiles/README.md). They receive (value at the element, its FHIRPath, the whole
  resource) and return Issues.

Every message is bilingual (en, fr). Values that pass the rule but look implausible give warnings,
not errors: the guide defines what is refused, the rest is advice.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from stdnum import luhn
from stdnum.fr import nir as stdnum_nir

from fhir_server.outcome import Issue

# --- identifier systems -------------------------------------------------------------------------
INS_NIR = "urn:oid:1.2.250.1.213.1.4.8"
INS_NIA = "urn:oid:1.2.250.1.213.1.4.9"
INS_NIR_TEST = "urn:oid:1.2.250.1.213.1.4.10"
INS_NIR_DEMO = "urn:oid:1.2.250.1.213.1.4.11"
INS_SYSTEMS = frozenset({INS_NIR, INS_NIA, INS_NIR_TEST, INS_NIR_DEMO})
FINESS = "https://finess.esante.gouv.fr"
FINESS_OLD = "http://finess.sante.gouv.fr"  # older HL7 France / Annuaire Santé spelling, accepted on input
FINESS_SYSTEMS = frozenset({FINESS, FINESS_OLD})
RPPS = "https://rpps.esante.gouv.fr"
IDNAT_PS = "urn:oid:1.2.250.1.71.4.2.1"  # value = "8" + RPPS for RPPS-registered professionals
IDNAT_STRUCT = "urn:oid:1.2.250.1.71.4.2.2"  # value = "1" + FINESS for FINESS-registered structures
DOSSIER_SYSTEM_PREFIX = "https://sidep.example.fr/dossier/"  # + its scope: see DOSSIER_SCOPES
RAT_DEVICES = "https://covid-19-diagnostics.jrc.ec.europa.eu/devices"
BIRTH_PLACE_URL = "http://hl7.org/fhir/StructureDefinition/patient-birthPlace"

# Clock skew tolerated before a date-time counts as "in the future".
FUTURE_TOLERANCE = timedelta(minutes=10)


def _error(code: str, en: str, fr: str, path: str) -> Issue:
    return Issue("error", code, en, fr, [path])


def _warning(code: str, en: str, fr: str, path: str) -> Issue:
    return Issue("warning", code, en, fr, [path])


def _missing(path: str, what_en: str, what_fr: str) -> list[Issue]:
    return [_error("required", f"{what_en} is missing", f"{what_fr} manquant(e)", path)]


# --- NIR / NIA (matricule INS) ------------------------------------------------------------------
# S AA MM DD CCC NNN KK: the département may be 2A/2B (Corsica). Months 20-42 and 50-99 exist for
# people whose birth month is unknown, so the month is deliberately not range-checked.
_NIR_SHAPE = re.compile(r"^[1-8]\d{4}(?:\d{2}|2[AB])\d{6}\d{2}\Z", re.ASCII)


def nir_key(body: str) -> int:
    """97 - (N mod 97) on the 13-character body, with 2A -> 19 and 2B -> 18 (python-stdnum does it)."""
    return int(stdnum_nir.calc_check_digits(body[:13]))


def is_valid_nir(value: str) -> bool:
    return isinstance(value, str) and bool(_NIR_SHAPE.match(value)) and nir_key(value) == int(value[13:])


def check_nir(value, path: str, label: str = "NIR") -> list[Issue]:
    if not isinstance(value, str) or not value:
        return _missing(path, f"The {label}", f"Le {label}")
    if not _NIR_SHAPE.match(value):
        return [
            _error(
                "value",
                f"The {label} must be 15 characters without separators "
                f"(sex, year, month, département or 2A/2B, commune, order, 2-digit key): '{value}'",
                f"Le {label} doit comporter 15 caractères sans séparateur (sexe, année, mois, "
                f"département ou 2A/2B, commune, rang, clé sur 2 chiffres) : « {value} »",
                path,
            )
        ]
    if nir_key(value) != int(value[13:]):
        # The expected key is deliberately not shown: "fixing" a typo by changing the key would attach
        # the result to somebody else's identity.
        return [
            _error(
                "value",
                f"The {label} control key is wrong: check the number '{value}'",
                f"La clé de contrôle du {label} est fausse : vérifiez le numéro « {value} »",
                path,
            )
        ]
    return []


def check_nia(value, path: str) -> list[Issue]:
    """NIA (numéro identifiant d'attente): same shape and key as the NIR."""
    return check_nir(value, path, label="NIA")


# --- FINESS, RPPS ---------------------------------------------------------------------------------
_FINESS_SHAPE = re.compile(r"^(?:\d{2}|2[AB])\d{7}\Z", re.ASCII)


def is_valid_finess(value: str) -> bool:
    return (
        isinstance(value, str)
        and bool(_FINESS_SHAPE.match(value))
        and (value[:2] in ("2A", "2B") or luhn.is_valid(value))
    )


def check_finess(value, path: str) -> list[Issue]:
    if not isinstance(value, str) or not value:
        return _missing(path, "The FINESS number", "Le numéro FINESS")
    if not _FINESS_SHAPE.match(value):
        return [
            _error(
                "value",
                f"A FINESS number has 9 characters (département then 7 digits): '{value}'",
                f"Un numéro FINESS comporte 9 caractères (département puis 7 chiffres) : « {value} »",
                path,
            )
        ]
    if value[:2] in ("2A", "2B"):
        # How the Luhn digit treats the Corsican letters is not documented: accept, but say so.
        return [
            _warning(
                "value",
                f"Corsican FINESS '{value}': its check digit cannot be verified",
                f"FINESS corse « {value} » : sa clé de contrôle ne peut pas être vérifiée",
                path,
            )
        ]
    if not luhn.is_valid(value):
        return [
            _error(
                "value",
                f"The FINESS check digit (Luhn) is wrong: '{value}'",
                f"La clé de contrôle (Luhn) du numéro FINESS est fausse : « {value} »",
                path,
            )
        ]
    return []


def check_rpps(value, path: str) -> list[Issue]:
    if not isinstance(value, str) or not value:
        return _missing(path, "The RPPS number", "Le numéro RPPS")
    if not re.fullmatch(r"\d{11}", value, re.ASCII):
        return [
            _error(
                "value",
                f"An RPPS number has 11 digits: '{value}'",
                f"Un numéro RPPS comporte 11 chiffres : « {value} »",
                path,
            )
        ]
    if not luhn.is_valid(value):
        # Sources say the last digit is a Luhn key but this is unverified: warn, never refuse.
        return [
            _warning(
                "value",
                f"The RPPS number '{value}' fails the Luhn check: please verify it",
                f"Le numéro RPPS « {value} » ne vérifie pas la clé de Luhn : vérifiez-le",
                path,
            )
        ]
    return []


# --- phone numbers (SI-DEP laboratory guide, section E.1) ---------------------------------------
_FR_MOBILE = re.compile(r"^(?:0[67]\d{8}|\+33[67]\d{8})\Z", re.ASCII)
_FR_OTHER = re.compile(r"^(?:0[1-589]\d{8}|\+33[1-589]\d{8})\Z", re.ASCII)
_INTERNATIONAL = re.compile(r"^\+[1-9]\d{6,14}\Z", re.ASCII)
_DIGITS = re.compile(r"^\+?\d+\Z", re.ASCII)
_OVERSEAS_REGIONS = ("GP", "RE", "GF", "MQ", "YT")  # 069x/0639 mobiles belong to these, not to "FR"


def _e164(number) -> str:
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _plausible(text: str, region: str | None):
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    return number if phonenumbers.is_valid_number(number) else None


@lru_cache(maxsize=65536)
def analyse_phone(value: str) -> tuple[str | None, tuple]:
    """(E.164 form or None, problems) where each problem is (severity, kind). Cached: numbers repeat."""
    if not value:
        return None, (("error", "empty"),)
    if not _DIGITS.match(value):
        return None, (("error", "separators"),)
    if value.startswith("00"):
        return None, (("error", "double-zero"),)
    if value.startswith("+330"):
        return None, (("error", "plus-33-zero"),)
    if _FR_MOBILE.match(value):
        return _french_mobile(value)
    if _FR_OTHER.match(value):
        return "+33" + value[-9:], (("error", "not-mobile"),)
    if value.startswith("0") or value.startswith("+33"):
        return None, (("error", "french-length"),)
    if value.startswith("+"):
        if not _INTERNATIONAL.match(value):
            return None, (("error", "international-length"),)
        number = _plausible(value, None)
        return (_e164(number), ()) if number else (value, (("warning", "implausible"),))
    return None, (("error", "no-prefix"),)


def _french_mobile(value: str) -> tuple[str | None, tuple]:
    national = "0" + value[3:] if value.startswith("+33") else value
    if _plausible(national, "FR"):
        return "+33" + national[1:], ()
    if value.startswith("0"):  # 0690..., 0639...: overseas mobiles written nationally
        for region in _OVERSEAS_REGIONS:
            number = _plausible(national, region)
            if number:
                return _e164(number), ()
    return "+33" + national[1:], (("warning", "implausible"),)


_PHONE_MESSAGES = {
    "empty": ("The phone number is empty", "Le numéro de téléphone est vide"),
    "separators": (
        "The phone number must contain digits only, after an optional leading '+': no "
        "separators ('.', '-', '/', spaces). Write 0612345678 or +33612345678",
        "Le numéro de téléphone ne doit contenir que des chiffres, précédés éventuellement de « + » : "
        "aucun séparateur (« . », « - », « / », espaces). Écrire 0612345678 ou +33612345678",
    ),
    "double-zero": (
        "International numbers start with '+' and the country code, not '00' (e.g. +44..., not 0044...)",
        "Les numéros étrangers commencent par « + » et l'indicatif du pays, pas par « 00 » (ex. +44..., pas 0044...)",
    ),
    "plus-33-zero": (
        "After +33 the leading 0 is dropped: write +336... or +337..., not +3306... or +3307...",
        "Après +33 le 0 initial disparaît : écrire +336... ou +337..., pas +3306... ou +3307...",
    ),
    "not-mobile": (
        "SI-DEP notifies by SMS: a French number must be a mobile starting with 06, 07, +336 "
        "or +337 followed by 8 digits",
        "SI-DEP notifie par SMS : un numéro français doit être un mobile commençant par 06, 07, "
        "+336 ou +337 suivi de 8 chiffres",
    ),
    "french-length": (
        "A French mobile number is 06 or 07 (or +336, +337) followed by 8 digits",
        "Un numéro de mobile français est 06 ou 07 (ou +336, +337) suivi de 8 chiffres",
    ),
    "international-length": (
        "An international number is '+', the country code and the number: 7 to 15 digits",
        "Un numéro étranger s'écrit « + », l'indicatif du pays puis le numéro : 7 à 15 chiffres",
    ),
    "no-prefix": (
        "A phone number starts with 06, 07, +336, +337, or '+' and the country code",
        "Un numéro de téléphone commence par 06, 07, +336, +337, ou « + » et l'indicatif du pays",
    ),
    "implausible": (
        "The phone number has a valid format but is not an allocated number for its country "
        "(check it: the SMS may not arrive)",
        "Le numéro de téléphone a un format valide mais n'est pas un numéro attribué dans son pays "
        "(à vérifier : le SMS risque de ne pas arriver)",
    ),
}


def check_phone(value, path: str, mobile_required: bool = True) -> list[Issue]:
    """The guide's rule. With mobile_required=False (a home/work landline) a French landline is a warning."""
    if not isinstance(value, str):
        return _missing(path, "The phone number", "Le numéro de téléphone")
    _, problems = analyse_phone(value)
    issues = []
    for severity, kind in problems:
        if kind == "not-mobile" and not mobile_required:
            severity = "warning"
        en, fr = _PHONE_MESSAGES[kind]
        issues.append(Issue(severity, "value", f"{en}: '{value}'", f"{fr} : « {value} »", [path]))
    return issues


def phone_to_e164(value: str) -> str | None:
    """The E.164 form to store, or None when the number breaks the rule (leave it as sent)."""
    if not isinstance(value, str):
        return None
    e164, problems = analyse_phone(value)
    return None if any(sev == "error" for sev, kind in problems if kind != "not-mobile") else e164


def mobile_e164(value: str) -> str | None:
    """The E.164 form of a number an SMS can reach (a French mobile, or a plausible foreign
    number), or None."""
    if not isinstance(value, str):
        return None
    e164, problems = analyse_phone(value)
    return None if any(severity == "error" for severity, _ in problems) else e164


# --- e-mail ---------------------------------------------------------------------------------------
# Plain ASCII addresses (dot-atom local part, LDH labels, alphabetic TLD) are valid by construction:
# they skip email-validator, which costs ~20 µs per new address on the write path.
_PLAIN_EMAIL = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}\Z"
)


@lru_cache(maxsize=65536)
def _email_problem(value: str) -> str | None:
    if len(value) <= 254 and value.find("@") <= 64 and _PLAIN_EMAIL.match(value):
        return None
    try:
        validate_email(value, check_deliverability=False)  # syntax only: no DNS on the write path
    except EmailNotValidError as exc:
        return str(exc)
    return None


def email_is_valid(value) -> bool:
    return isinstance(value, str) and bool(value) and _email_problem(value) is None


def check_email(value, path: str) -> list[Issue]:
    if not isinstance(value, str) or not value:
        return _missing(path, "The e-mail address", "L'adresse de courriel")
    problem = _email_problem(value)
    if problem:
        return [
            _error(
                "value",
                f"Invalid e-mail address '{value}': {problem}",
                f"Adresse de courriel invalide « {value} » : {problem}",
                path,
            )
        ]
    return []


# --- dates ----------------------------------------------------------------------------------------
_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?\Z", re.ASCII)


def check_birth_date(value, path: str, today: date | None = None) -> list[Issue]:
    if not isinstance(value, str) or not value:
        return _missing(path, "The birth date", "La date de naissance")
    match = _DATE.match(value)
    if not match:
        return [
            _error(
                "value",
                f"The birth date must be YYYY-MM-DD: '{value}'",
                f"La date de naissance doit être au format AAAA-MM-JJ : « {value} »",
                path,
            )
        ]
    today = today or date.today()
    year, month, day = int(match[1]), int(match[2] or 1), int(match[3] or 1)
    try:
        earliest = date(year, month, day)
    except ValueError:
        return [
            _error(
                "value",
                f"The birth date does not exist: '{value}'",
                f"La date de naissance n'existe pas : « {value} »",
                path,
            )
        ]
    if earliest > today:
        return [
            _error(
                "value",
                f"The birth date is in the future: '{value}'",
                f"La date de naissance est dans le futur : « {value} »",
                path,
            )
        ]
    issues = []
    if year < today.year - 125:
        issues.append(
            _warning(
                "value",
                f"The birth date is implausibly old: '{value}'",
                f"La date de naissance est invraisemblablement ancienne : « {value} »",
                path,
            )
        )
    if not match[3]:
        # The citizen portal asks the full birth date: a partial one locks the patient out.
        issues.append(
            _warning(
                "incomplete",
                f"The birth date should be complete (YYYY-MM-DD): '{value}'",
                f"La date de naissance devrait être complète (AAAA-MM-JJ) : « {value} »",
                path,
            )
        )
    return issues


def _parse_instant(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        match = _DATE.match(value)
        if not match:
            return None
        parsed = datetime(int(match[1]), int(match[2] or 1), int(match[3] or 1))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def check_not_future(value, path: str, now: datetime | None = None) -> list[Issue]:
    if not isinstance(value, str):
        return []
    moment = _parse_instant(value)
    if moment is None:
        return [_error("value", f"Not a valid date-time: '{value}'", f"Date-heure invalide : « {value} »", path)]
    if moment > (now or datetime.now(UTC)) + FUTURE_TOLERANCE:
        return [
            _error(
                "value",
                f"The date-time is in the future: '{value}'",
                f"La date-heure est dans le futur : « {value} »",
                path,
            )
        ]
    return []


# --- names ----------------------------------------------------------------------------------------
_NAME_CHARS = re.compile(r"^[^\W\d_]+(?:[ '\-’][^\W\d_]+)*\Z")  # letters (accents too), space, hyphen, apostrophe


def check_human_name(name, path: str, require_parts: bool = True) -> list[Issue]:
    """Family and given names present and not blank. require_parts=False leaves absent parts to the
    profile's cardinality rules (so that one missing name gives one issue, not two)."""
    if not isinstance(name, dict):
        return []
    issues = []
    family = name.get("family")
    if family is None and not require_parts:
        pass
    elif not isinstance(family, str) or not family.strip():
        issues += _missing(f"{path}.family", "The family name", "Le nom de famille")
    elif not _NAME_CHARS.match(family.strip()):
        issues.append(
            _warning(
                "value",
                f"Unusual characters in the family name '{family}'",
                f"Caractères inhabituels dans le nom de famille « {family} »",
                f"{path}.family",
            )
        )
    given = name.get("given")
    if given is None and not require_parts:
        pass
    elif not isinstance(given, list) or not any(isinstance(g, str) and g.strip() for g in given):
        issues += _missing(f"{path}.given", "The given name", "Le prénom")
    else:
        for i, first in enumerate(given):
            if not isinstance(first, str) or not first.strip():
                issues += _missing(f"{path}.given[{i}]", "The given name", "Le prénom")
            elif not _NAME_CHARS.match(first.strip()):
                issues.append(
                    _warning(
                        "value",
                        f"Unusual characters in the given name '{first}'",
                        f"Caractères inhabituels dans le prénom « {first} »",
                        f"{path}.given[{i}]",
                    )
                )
    return issues


# --- INSEE (COG) code of a birth place -------------------------------------------------------------
_COG = re.compile(r"^(?:\d{5}|2[AB]\d{3})\Z", re.ASCII)  # commune (incl. Corsica 2A/2B, overseas 97x) or 99xxx abroad


def check_cog_code(value, path: str) -> list[Issue]:
    if isinstance(value, str) and _COG.match(value):
        return []
    return [
        _error(
            "value",
            f"The INSEE (COG) code must be 5 characters (e.g. 75056, 2A004, 99350): '{value}'",
            f"Le code INSEE (COG) doit comporter 5 caractères (ex. 75056, 2A004, 99350) : « {value} »",
            path,
        )
    ]


# ==================================================================================================
# Named validators: what StructureDefinition constraints refer to by `key`.
# Signature: (value at the element, FHIRPath of that value, whole resource) -> list[Issue].
# ==================================================================================================
Validator = Callable[[object, str, dict], list]
VALIDATORS: dict[str, Validator] = {}


def validator(key: str):
    def register(fn: Validator) -> Validator:
        VALIDATORS[key] = fn
        return fn

    return register


def _check_idnat_struct(value, path):
    if isinstance(value, str) and value.startswith("1"):
        return check_finess(value[1:], path)
    return []


def _check_idnat_ps(value, path):
    if isinstance(value, str) and value.startswith("8"):
        return check_rpps(value[1:], path)
    return []


# identifier.system -> check of identifier.value: adding an identifier kind is one line here.
IDENTIFIER_CHECKS: dict[str, Callable[[object, str], list]] = {
    INS_NIR: check_nir,
    INS_NIR_TEST: check_nir,
    INS_NIR_DEMO: check_nir,
    INS_NIA: check_nia,
    FINESS: check_finess,
    FINESS_OLD: check_finess,
    RPPS: check_rpps,
    IDNAT_STRUCT: _check_idnat_struct,
    IDNAT_PS: _check_idnat_ps,
}


@validator("sidep-identifier")
def validate_identifier(identifier, path, resource):
    if not isinstance(identifier, dict):
        return []
    check = IDENTIFIER_CHECKS.get(identifier.get("system"))
    return check(identifier.get("value"), f"{path}.value") if check else []


@validator("sidep-human-name")
def validate_human_name(name, path, resource):
    return check_human_name(name, path, require_parts=False)


@validator("sidep-birth-date")
def validate_birth_date(value, path, resource):
    return check_birth_date(value, path)


@validator("sidep-not-future")
def validate_not_future(value, path, resource):
    return check_not_future(value, path)


@validator("sidep-contact-point")
def validate_contact_point(contact, path, resource):
    if not isinstance(contact, dict):
        return []
    system, value = contact.get("system"), contact.get("value")
    if system in ("phone", "sms"):
        landline_allowed = system == "phone" and contact.get("use") in ("home", "work")
        return check_phone(value, f"{path}.value", mobile_required=not landline_allowed)
    if system == "email":
        return check_email(value, f"{path}.value")
    return []


@validator("sidep-birthplace")
def validate_birthplace(extension, path, resource):
    if not isinstance(extension, dict) or extension.get("url") != BIRTH_PLACE_URL:
        return []
    address = extension.get("valueAddress")
    if not isinstance(address, dict):
        return [
            _error(
                "required",
                "The birth place extension needs a valueAddress",
                "L'extension lieu de naissance requiert une valueAddress",
                f"{path}.valueAddress",
            )
        ]
    if "district" not in address:
        return []  # a birth place given by city/country only is allowed; the INSEE code is optional
    return check_cog_code(address["district"], f"{path}.valueAddress.district")


@validator("sidep-official-name")
def validate_official_name(patient, path, resource):
    """The birth family name travels as name.use = official; a qualified INS identity requires it."""
    names = patient.get("name") if isinstance(patient, dict) else None
    if not isinstance(names, list) or not names:
        return []  # no name at all: the profile's cardinality rule reports it
    if any(isinstance(n, dict) and n.get("use") == "official" for n in names):
        return []
    has_ins = any(isinstance(i, dict) and i.get("system") in INS_SYSTEMS for i in patient.get("identifier") or [])
    en = "The birth family name must be sent as a name with use = 'official'"
    fr = "Le nom de naissance doit être transmis comme un nom avec use = « official »"
    if has_ins:
        return [_error("required", en + " (required with an INS)", fr + " (obligatoire avec un INS)", f"{path}.name")]
    return [_warning("required", en, fr, f"{path}.name")]


@validator("sidep-nir-consistency")
def validate_nir_consistency(patient, path, resource):
    """The NIR repeats sex and year of birth: disagreement usually means a mix-up of patients."""
    issues = []
    for i, ident in enumerate(patient.get("identifier") or []):
        if not isinstance(ident, dict) or ident.get("system") not in (INS_NIR, INS_NIR_TEST, INS_NIR_DEMO):
            continue
        value = ident.get("value")
        if not is_valid_nir(value):
            continue
        sex = {"1": "male", "2": "female"}.get(value[0])
        gender, birth = patient.get("gender"), patient.get("birthDate")
        if sex and gender in ("male", "female") and gender != sex:
            issues.append(
                _warning(
                    "value",
                    f"The NIR sex digit '{value[0]}' does not match gender '{gender}'",
                    f"Le chiffre de sexe du NIR « {value[0]} » ne correspond pas au sexe « {gender} »",
                    f"{path}.identifier[{i}].value",
                )
            )
        if isinstance(birth, str) and len(birth) >= 4 and birth[2:4] != value[1:3]:
            issues.append(
                _warning(
                    "value",
                    f"The NIR year '{value[1:3]}' does not match the birth date '{birth}'",
                    f"L'année du NIR « {value[1:3]} » ne correspond pas à la date de naissance « {birth} »",
                    f"{path}.identifier[{i}].value",
                )
            )
    return issues


@validator("sidep-organization-finess")
def validate_organization_finess(org, path, resource):
    identifiers = org.get("identifier") if isinstance(org, dict) else None
    if any(isinstance(i, dict) and i.get("system") in FINESS_SYSTEMS for i in identifiers or []):
        return []
    return [
        _error(
            "required",
            f"The organization needs a FINESS identifier (system {FINESS})",
            f"L'organisation doit avoir un identifiant FINESS (système {FINESS})",
            f"{path}.identifier",
        )
    ]


_DOSSIER_VALUE = re.compile(r"^\S{1,64}\Z")

# Whom a dossier system is scoped to, by what follows DOSSIER_SYSTEM_PREFIX: (its prefix there, the
# check of the number after it, how to write it in English, in French). The first prefix that
# matches wins ("" last). Adding a kind of scope is one line here.
DOSSIER_SCOPES: tuple[tuple[str, Callable[[object, str], list], str, str], ...] = (
    ("rpps-", check_rpps, "rpps-<RPPS>", "rpps-<RPPS>"),  # a nurse or doctor without organisation
    ("", check_finess, "<FINESS juridique>", "<FINESS juridique>"),  # a laboratory, a pharmacy ...
)


@validator("sidep-dossier-identifier")
def validate_dossier_identifier(request, path, resource):
    """The dossier number, in a system scoped to whoever keeps the dossier: a laboratory's FINESS
    juridique, or the RPPS number of a professional without organisation (DOSSIER_SCOPES)."""
    identifiers = request.get("identifier") if isinstance(request, dict) else None
    issues, found = [], False
    for i, ident in enumerate(identifiers or []):
        system = ident.get("system") if isinstance(ident, dict) else None
        if not isinstance(system, str) or not system.startswith(DOSSIER_SYSTEM_PREFIX):
            continue
        found = True
        scope = system[len(DOSSIER_SYSTEM_PREFIX) :]
        prefix, check, _, _ = next(s for s in DOSSIER_SCOPES if scope.startswith(s[0]))
        issues += check(scope[len(prefix) :], f"{path}.identifier[{i}].system")
        if not isinstance(ident.get("value"), str) or not _DOSSIER_VALUE.match(ident["value"]):
            issues.append(
                _error(
                    "value",
                    "The dossier number must be 1 to 64 characters without spaces",
                    "Le numéro de dossier doit comporter 1 à 64 caractères sans espace",
                    f"{path}.identifier[{i}].value",
                )
            )
    if not found:
        en = " or ".join(DOSSIER_SYSTEM_PREFIX + s[2] for s in DOSSIER_SCOPES)
        fr = " ou ".join(DOSSIER_SYSTEM_PREFIX + s[3] for s in DOSSIER_SCOPES)
        issues.append(
            _error(
                "required",
                f"The dossier number is missing: an identifier with system {en}",
                f"Le numéro de dossier est manquant : un identifiant de système {fr}",
                f"{path}.identifier",
            )
        )
    return issues


_RESULT_STATUSES = ("final", "amended", "corrected")


@validator("sidep-observation-value")
def validate_observation_value(obs, path, resource):
    """A released result carries a value, of the kind its test code calls for (quantity or coded)."""
    if not isinstance(obs, dict):
        return []
    value_key = next((k for k in obs if k.startswith("value") and k[5:6].isupper()), None)
    if value_key is None:
        if obs.get("status") in _RESULT_STATUSES and "dataAbsentReason" not in obs:
            return [
                _error(
                    "required",
                    "A final result needs a value (valueCodeableConcept or valueQuantity)",
                    "Un résultat final doit avoir une valeur (valueCodeableConcept ou valueQuantity)",
                    f"{path}.value",
                )
            ]
        return []
    scale = _loinc_scale(obs.get("code"))
    if scale == "Qn" and value_key != "valueQuantity":
        return [
            _error(
                "value",
                "This test code is quantitative: its value must be a valueQuantity",
                "Ce code d'analyse est quantitatif : sa valeur doit être une valueQuantity",
                f"{path}.{value_key}",
            )
        ]
    if scale in ("Ord", "Nom") and value_key != "valueCodeableConcept":
        return [
            _error(
                "value",
                "This test code is qualitative: its value must be a valueCodeableConcept (SNOMED CT)",
                "Ce code d'analyse est qualitatif : sa valeur doit être une valueCodeableConcept (SNOMED CT)",
                f"{path}.{value_key}",
            )
        ]
    return []


def _loinc_scale(code) -> str | None:
    from terminology.service import get_service  # late import: validators stay usable without code lists

    service = get_service()
    codings = code.get("coding") if isinstance(code, dict) else None
    for coding in codings if isinstance(codings, list) else []:
        if isinstance(coding, dict) and coding.get("system") == "http://loinc.org":
            concept = service.concept("http://loinc.org", coding.get("code"))
            if concept is not None:
                return concept.properties.get("scale")
    return None


@validator("sidep-rat-device")
def validate_rat_device(device, path, resource):
    """A rapid antigen test device named by its EU (JRC) id should be on the DCC list."""
    ident = device.get("identifier") if isinstance(device, dict) else None
    if not isinstance(ident, dict) or ident.get("system") != RAT_DEVICES:
        return []
    from terminology.service import get_service

    if get_service().concept(RAT_DEVICES, ident.get("value")) is None:
        return [
            _warning(
                "code-invalid",
                f"Unknown rapid antigen test device id '{ident.get('value')}' "
                "(not in the EU DCC list): no EU certificate can name it",
                f"Identifiant de test antigénique rapide inconnu « {ident.get('value')} » (absent de la "
                "liste EU DCC) : aucun certificat européen ne pourra le mentionner",
                f"{path}.identifier.value",
            )
        ]
    return []

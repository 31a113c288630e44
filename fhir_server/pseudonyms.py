"""Pseudonymised results for public health (Santé publique France, DREES, Health Data Hub).

Pure functions and a small keyring; the feed, `$export` and aggregates are built on them.

**The pseudonym of a person** is a keyed hash, HMAC-SHA256 with a secret key, of:
- the INS when the Patient has one (`identifier.system` in profiles.validators.INS_SYSTEMS; a
  NIR is preferred to a NIA, which is temporary): its first 13 characters, upper case, spaces
  removed (the last two are a check key computed from them, so they add nothing);
- else the identity traits, each normalised: birth family name (the `official` name), given
  names (the FR Core birth list of given names when present, else all of `given`, joined: a
  compound "Jean-Pierre" cannot be told from the two given names "Jean Pierre", so the list is
  taken whole), birth date as FHIR stores it, sex (M / F / U). Names are folded: case, accents
  and ligatures (Céline = Celine, Œ = OE), hyphens, apostrophes, spaces and any other
  punctuation removed: "JEAN-PIERRE" = "Jean Pierre", "D'Arc" = "DARC". Without a family name
  or a birth date there is no pseudonym (None).
The two inputs are domain-separated inside the HMAC, and the pseudonym says which it is, so an
INS pseudonym never equals a traits pseudonym: `v<key version>.<i|t>.<digest>`, e.g.
`v2.i.k3q…` — the digest is the HMAC truncated to 128 bits in lower-case base32 without padding
(26 characters). Collision odds: about n²/2¹²⁹ for n people, 2⁻⁷⁷ for 70 million, negligible.
Stable across results and laboratories (nothing of the result enters it); without the key it
cannot be reversed, nor recomputed from a guessed NIR or name (with the key it can: traits and
NIRs are guessable, which is why the key never leaves the platform). The `i` / `t` marker tells
consumers what a link rests on: the INS, or traits that a typo or a change of name splits in two.
Limit: one person's result sent with an INS and another sent without gets two pseudonyms; the
platform's person records (`_persons`) match by INS only, so they cannot join them either.

**Keys** (`PSEUDONYM_KEY_FILE`): a file of `version:base64key` lines (blank lines and `#`
comments ignored), or a directory of `<version>.key` files each holding a base64 key; versions are
positive integers, keys at least 32 bytes. The highest version computes new pseudonyms. Unset
(development): one key, version 1, generated at first use in VAR_DIR/keys/pseudonym-v1.key.
Every process must read the same keys: a pseudonym is only stable under one key.

**Rotation**: add a line (or file) with the next version and restart the processes; from then on
pseudonyms carry the new version and are unrelated to the old ones — which is the point of a
rotation. The old pseudonyms cannot be converted: an HMAC has no inverse. A consumer that must
link a person across the rotation needs the platform, which still holds the identities, to
compute both: `across_rotation(patient, keyring, old_version)` gives (old, new) for one person
while both keys are in the keyring. Removing the old key from the keyring ends that for good.

**The record of a result** (`record_of`): the pseudonym and its key version, the age class at
sampling (`cl_age90` of Santé publique France's open data: 09 for 0–9 years, 19 for 10–19, …, 89
for 80–89, 90 for 90 and over; their "0", all ages, only exists in aggregates), sex (M/F/U), the
département of residence, test type (naat / antigen / serology, from the LOINC code:
operations/certificates/loinc_kinds.json, else the SI-DEP value sets of terminology/), result
(detected / not-detected / inconclusive), sampling day (Europe/Paris), the type of the performer
and its FINESS. Nothing else: no name, contact, address line, postal code, birth date, NIR or
free text. A value the result does not give (or gives unreadably) is None.

**Département** of the Patient's home address (else its first address not marked `old`): from
its INSEE (COG) code when present (an address extension whose URL ends with `insee-code`, or the
`district`, as this project writes birth places), which wins because some postal codes cross
départements; else from the postal code: Corsica 20000–20199 → 2A, 20200 and above → 2B;
overseas 971–976 from 971xx–976xx; the overseas collectivities by their COG code: 97133
Saint-Barthélemy → 977, 97150 Saint-Martin → 978 (their postal codes look like Guadeloupe's,
but they left it in 2007), 975xx Saint-Pierre-et-Miquelon → 975, 986/987/988 → 986/987/988.
Abroad (a country other than France, an INSEE code 99xxx) and Monaco (98000, a foreign state
with a French postal code) → "99", as the INSEE codes places abroad. Unreadable or missing → None.

**Performer type**: from Organization.type (its codes, displays and text): "laboratoire",
"pharmacie", "infirmier", "medecin", else "autre"; an Organization without a type is a
laboratory, as the laboratories' LIS send it (the web form types its sites by the user's role:
fhir_server/web/results.py SITE_TYPES). No performing Organization at all is "professionnel": a
pharmacist, nurse or doctor without organisation, entering a result in the web form.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path

from operations.certificates.facts import (
    FINESS_SYSTEMS,
    INTERPRETATION,
    INTERPRETED_RESULTS,
    LOINC,
    RESULTS,
    SNOMED,
    kind_of_loinc,
)
from operations.certificates.keys import private_secret
from profiles.validators import INS_NIA, INS_NIR, INS_NIR_DEMO, INS_NIR_TEST

from .dossier import PARIS

TEST_KINDS = ("naat", "antigen", "serology")
TEST_VALUE_SETS = "https://sidep.example.fr/fhir/ValueSet"
MIN_KEY_BYTES = 32
DIGEST_BYTES = 16  # 128 bits: 26 base32 characters
DEVELOPMENT_KEY = "pseudonym-v1.key"
# Which INS identifies the person when several are sent: the definitive NIR before the NIA.
INS_PREFERENCE = (INS_NIR, INS_NIR_TEST, INS_NIR_DEMO, INS_NIA)
KIND_INS, KIND_TRAITS, KIND_RESULT = "i", "t", "r"
_DOMAIN = {
    KIND_INS: b"sidep-pseudonym\x00ins\x00",
    KIND_TRAITS: b"sidep-pseudonym\x00traits\x00",
    KIND_RESULT: b"sidep-pseudonym\x00result\x00",
}
SEXES = {"male": "M", "female": "F"}
RECORD_FIELDS = (
    "pseudonym",
    "key_version",
    "age_class",
    "sex",
    "departement",
    "test_type",
    "result",
    "sampling_date",
    "performer_type",
    "finess",
)
# Letters NFKD does not decompose; the rest of the accents go with the combining marks.
_LIGATURES = str.maketrans({"œ": "oe", "Œ": "OE", "æ": "ae", "Æ": "AE", "ß": "ss", "ø": "o", "Ø": "O", "ł": "l"})
_PSEUDONYM = re.compile(r"^v([1-9][0-9]*)\.([it])\.([a-z2-7]{26})$")


class PseudonymKeyError(ValueError):
    """The keys cannot be read; the message names the place, never a key."""


# --- keys -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Keyring:
    keys: dict[int, bytes] = field(repr=False)  # version -> key; never in a repr, so never in a log

    def __post_init__(self):
        if not self.keys:
            raise PseudonymKeyError("No pseudonym key.")

    @property
    def current_version(self) -> int:
        return max(self.keys)

    def key(self, version: int) -> bytes:
        if version not in self.keys:
            raise PseudonymKeyError(f"No pseudonym key of version {version}.")
        return self.keys[version]


def load_keyring(settings) -> Keyring:
    """The keys of PSEUDONYM_KEY_FILE, else the development key (made at first use). Read from disk
    at each call: a caller loads it once per job or process."""
    if settings.pseudonym_key_file:
        return read_keyring(settings.pseudonym_key_file)
    return Keyring({1: private_secret(Path(settings.var_dir) / "keys" / DEVELOPMENT_KEY)})


def read_keyring(path: str | Path) -> Keyring:
    path = Path(path)
    if path.is_dir():
        return Keyring(_keys_of_directory(path))
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as error:
        raise PseudonymKeyError(f"Cannot read the pseudonym keys in {path}: {type(error).__name__}.") from None
    return Keyring(parse_key_lines(text, str(path)))


def parse_key_lines(text: str, where: str = "PSEUDONYM_KEY_FILE") -> dict[int, bytes]:
    keys: dict[int, bytes] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        version_text, separator, encoded = line.partition(":")
        if not separator:
            raise PseudonymKeyError(f"{where}, line {number}: expected version:base64key.")
        _add_key(keys, version_text, encoded, f"{where}, line {number}")
    return keys


def _keys_of_directory(directory: Path) -> dict[int, bytes]:
    keys: dict[int, bytes] = {}
    for path in sorted(directory.glob("*.key")):
        try:
            text = path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as error:
            raise PseudonymKeyError(f"Cannot read the pseudonym key {path}: {type(error).__name__}.") from None
        _add_key(keys, path.stem, text, str(path))
    return keys


def _add_key(keys: dict[int, bytes], version_text: str, encoded: str, where: str) -> None:
    version_text = version_text.strip()
    if not (version_text.isascii() and version_text.isdigit() and int(version_text) > 0):
        raise PseudonymKeyError(f"{where}: the version must be a positive integer.")
    version = int(version_text)
    if version in keys:
        raise PseudonymKeyError(f"{where}: version {version} is given twice.")
    try:
        key = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise PseudonymKeyError(f"{where}: the key is not base64.") from None
    if len(key) < MIN_KEY_BYTES:
        raise PseudonymKeyError(f"{where}: the key must be at least {MIN_KEY_BYTES} bytes.")
    keys[version] = key


# --- pseudonyms -------------------------------------------------------------------------------------


def fold(text: str | None) -> str:
    """A name reduced to what stays the same however it is typed: lower-case ASCII letters and
    digits only (accents, ligatures, case, hyphens, apostrophes, spaces gone)."""
    decomposed = unicodedata.normalize("NFKD", (text or "").translate(_LIGATURES))
    bare = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    return "".join(c for c in bare if c.isascii() and c.isalnum())


def ins_of(patient: dict) -> str | None:
    """The INS of the Patient, normalised (see the module docstring), or None."""
    found = {
        i.get("system"): i.get("value")
        for i in patient.get("identifier") or []
        if isinstance(i, dict) and isinstance(i.get("value"), str)
    }
    for system in INS_PREFERENCE:
        value = "".join((found.get(system) or "").split()).upper()
        if value:
            return value[:13]
    return None


def sex_of(patient: dict) -> str:
    return SEXES.get(patient.get("gender"), "U")


def identity_traits(patient: dict) -> tuple[str, str, str, str] | None:
    """(family, given names, birth date, sex), normalised; None without family name or birth date."""
    name = _official_name(patient)
    family = fold(name.get("family"))
    birth_date = patient.get("birthDate")
    if not family or not isinstance(birth_date, str) or not birth_date.strip():
        return None
    return family, fold(_given_names(name)), birth_date.strip(), sex_of(patient)


def _official_name(patient: dict) -> dict:
    names = [n for n in patient.get("name") or [] if isinstance(n, dict)]
    official = [n for n in names if n.get("use") == "official"]
    return (official or names or [{}])[0]


def _given_names(name: dict) -> str:
    for extension in name.get("extension") or []:
        if str(extension.get("url", "")).endswith("birth-list-given-name") and extension.get("valueString"):
            return str(extension["valueString"])
    return " ".join(g for g in name.get("given") or [] if isinstance(g, str))


def ins_pseudonym(ins: str, key: bytes, version: int) -> str:
    return _pseudonym(KIND_INS, ins.encode("ascii", "replace"), key, version)


def traits_pseudonym(traits: tuple[str, str, str, str], key: bytes, version: int) -> str:
    # The folded fields hold no \x1f: joining them cannot make two tuples one message.
    return _pseudonym(KIND_TRAITS, "\x1f".join(traits).encode(), key, version)


def _pseudonym(kind: str, message: bytes, key: bytes, version: int) -> str:
    digest = hmac.new(key, _DOMAIN[kind] + message, hashlib.sha256).digest()[:DIGEST_BYTES]
    return f"v{version}.{kind}.{base64.b32encode(digest).decode().rstrip('=').lower()}"


def pseudonym(patient: dict, keyring: Keyring, version: int | None = None) -> str | None:
    """The pseudonym of the Patient under the key `version` (default: the current one)."""
    version = keyring.current_version if version is None else version
    key = keyring.key(version)
    ins = ins_of(patient)
    if ins:
        return ins_pseudonym(ins, key, version)
    traits = identity_traits(patient)
    return traits_pseudonym(traits, key, version) if traits else None


def result_key(report_id: str, keyring: Keyring) -> str:
    """The key of a result in the pseudonymised feed: stable across the result's changes (the
    feed's storage keeps the one given first, a rotation changes nothing), telling nothing of the
    result without the key. Same form as a pseudonym, `v<version>.r.<digest>`."""
    version = keyring.current_version
    return _pseudonym(KIND_RESULT, report_id.encode(), keyring.key(version), version)


def parse_pseudonym(value: str) -> tuple[int, str, str] | None:
    """(key version, "i" or "t", digest) of a well-formed pseudonym, else None."""
    match = _PSEUDONYM.match(value or "")
    return (int(match[1]), match[2], match[3]) if match else None


def across_rotation(
    patient: dict, keyring: Keyring, old_version: int, new_version: int | None = None
) -> tuple[str | None, str | None]:
    """(pseudonym under old_version, under new_version — default the current one) of one person,
    for a consumer that must link across a rotation; PseudonymKeyError once a key is gone."""
    new_version = keyring.current_version if new_version is None else new_version
    return pseudonym(patient, keyring, old_version), pseudonym(patient, keyring, new_version)


# --- the record of a result ---------------------------------------------------------------------------


def record_of(resources: dict, settings, keyring: Keyring | None = None) -> dict:
    """The pseudonymised record of one result, from the resources of
    operations.generate_certificate.load_result_resources (report, observation, specimen,
    patient, organization); keyring: load_keyring(settings) when not given."""
    keyring = keyring or load_keyring(settings)
    patient = resources.get("patient") or {}
    observation = resources.get("observation") or {}
    organization = resources.get("organization")
    sampled = sampling_date(resources.get("specimen"), observation)
    return {
        "pseudonym": pseudonym(patient, keyring),
        "key_version": keyring.current_version,
        "age_class": age_class(patient.get("birthDate"), sampled),
        "sex": sex_of(patient),
        "departement": departement_of(patient),
        "test_type": kind_of_test(observation),
        "result": result_of(observation),
        "sampling_date": sampled.isoformat() if sampled else None,
        "performer_type": performer_type(organization),
        "finess": finess_of(organization),
    }


def published(position: int, key: str, state: str, record: dict | None, at: str) -> dict:
    """A record as public health gets it, in the feed and in `$export` alike: where it stands in
    the feed, the result's key (`result_key`: the same for every version of one result), `state`
    (current or withdrawn), when it was written, then the record's fields (none once withdrawn)."""
    return {"position": position, "result_key": key, "state": state, "at": at, **(record or {})}


def age_class(birth_date: str | None, on: date | None) -> str | None:
    """The cl_age90 class at `on`; a partial birth date (YYYY, YYYY-MM) gives a class only when
    every day it may stand for gives the same one."""
    span = _birth_span(birth_date)
    if span is None or on is None:
        return None
    earliest, latest = span
    oldest, youngest = _age(earliest, on), _age(latest, on)
    if youngest < 0:
        return None  # sampled before birth: a wrong date, no class is better than a false one
    classes = {_class_of_age(oldest), _class_of_age(youngest)}
    return classes.pop() if len(classes) == 1 else None


def _class_of_age(age: int) -> str:
    return f"{min(age // 10 * 10 + 9, 90):02d}"


def _age(birth: date, on: date) -> int:
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def _birth_span(value: str | None) -> tuple[date, date] | None:
    try:
        parts = [int(p) for p in (value or "").split("-")]
        if len(parts) == 3:
            day = date(*parts)
            return day, day
        if len(parts) == 2:
            first = date(parts[0], parts[1], 1)
            following = date(parts[0] + parts[1] // 12, parts[1] % 12 + 1, 1)
            return first, date.fromordinal(following.toordinal() - 1)
        if len(parts) == 1:
            return date(parts[0], 1, 1), date(parts[0], 12, 31)
    except ValueError:
        return None
    return None


def sampling_date(specimen: dict | None, observation: dict) -> date | None:
    """The sampling day in Paris: Specimen.collection, else the observation's effective time."""
    collection = (specimen or {}).get("collection") or {}
    value = collection.get("collectedDateTime") or (collection.get("collectedPeriod") or {}).get("start")
    value = value or observation.get("effectiveDateTime") or (observation.get("effectivePeriod") or {}).get("start")
    return _paris_day(value)


def _paris_day(value) -> date | None:
    if not isinstance(value, str):
        return None
    try:
        if "T" not in value:
            return date.fromisoformat(value)
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.astimezone(PARIS).date() if moment.tzinfo else moment.date()


def _codes(concept: dict | None, system: str) -> list[str]:
    return [
        c["code"]
        for c in (concept or {}).get("coding") or []
        if isinstance(c, dict) and c.get("system") == system and isinstance(c.get("code"), str)
    ]


def kind_of_test(observation: dict) -> str | None:
    for code in _codes(observation.get("code"), LOINC):
        kind = kind_of_loinc(code) or _kinds_of_value_sets().get(code)
        if kind:
            return kind
    return None


@lru_cache(maxsize=1)
def _kinds_of_value_sets() -> dict[str, str]:
    """LOINC code -> kind from the SI-DEP value sets of terminology/: loinc_kinds.json only holds
    the codes certificates are made for, the value sets every code laboratories send."""
    from terminology.service import get_service  # loads the code lists: only when first needed

    service = get_service()
    return {
        concept.code: kind
        for kind in TEST_KINDS
        for concept in service.members(f"{TEST_VALUE_SETS}/sars-cov-2-{kind}-tests")
    }


def result_of(observation: dict) -> str | None:
    for code in _codes(observation.get("valueCodeableConcept"), SNOMED):
        if code in RESULTS:
            return RESULTS[code]
    for concept in observation.get("interpretation") or []:
        for code in _codes(concept, INTERPRETATION):
            return INTERPRETED_RESULTS.get(code, "inconclusive")
    # A number without its interpretation says nothing one can count as a result.
    return "inconclusive" if "valueQuantity" in observation else None


def finess_of(organization: dict | None) -> str | None:
    for identifier in (organization or {}).get("identifier") or []:
        if identifier.get("system") in FINESS_SYSTEMS and isinstance(identifier.get("value"), str):
            return identifier["value"]
    return None


# Folded words of Organization.type -> performer type (first match wins).
PERFORMER_WORDS = (
    ("pharmac", "pharmacie"),
    ("officine", "pharmacie"),
    ("infirm", "infirmier"),
    ("nurs", "infirmier"),
    ("medecin", "medecin"),
    ("cabinetmedical", "medecin"),
    ("laborat", "laboratoire"),
    ("biolog", "laboratoire"),
)


def performer_type(organization: dict | None) -> str:
    if organization is None:
        return "professionnel"  # no performing Organization: a professional on their own
    words = _type_words(organization)
    if not words:
        return "laboratoire"
    for stem, kind in PERFORMER_WORDS:
        if any(stem in word for word in words):
            return kind
    return "autre"


def _type_words(organization: dict) -> list[str]:
    """The folded text, codes and displays of Organization.type."""
    texts = []
    for concept in organization.get("type") or []:
        if not isinstance(concept, dict):
            continue
        texts.append(concept.get("text"))
        for coding in concept.get("coding") or []:
            if isinstance(coding, dict):
                texts += [coding.get("code"), coding.get("display")]
    return [fold(text) for text in texts if isinstance(text, str) and fold(text)]


# --- département -----------------------------------------------------------------------------------

FRANCE = frozenset({"fr", "fra", "france", "gp", "mq", "gf", "re", "yt", "pm", "bl", "mf"})
COLLECTIVITY_POSTAL_CODES = {"97133": "977", "97150": "978"}  # Saint-Barthélemy, Saint-Martin
ABROAD = "99"
_COG = re.compile(r"^(?:[0-9]{2}|2A|2B)[0-9]{3}$")


def departement_of(patient: dict) -> str | None:
    address = _residence(patient)
    if address is None:
        return None
    country = fold(address.get("country"))
    if country and country not in FRANCE and not country.startswith("france"):
        return ABROAD
    cog = _insee_code(address)
    if cog:
        return departement_of_insee(cog)
    return departement_of_postal_code(address.get("postalCode"))


def _residence(patient: dict) -> dict | None:
    addresses = [a for a in patient.get("address") or [] if isinstance(a, dict) and a.get("use") != "old"]
    homes = [a for a in addresses if a.get("use") == "home"]
    return (homes or addresses or [None])[0]


def _insee_code(address: dict) -> str | None:
    extensions = list(address.get("extension") or []) + list((address.get("_city") or {}).get("extension") or [])
    candidates = [
        e.get("valueCode") or e.get("valueString") or (e.get("valueCoding") or {}).get("code")
        for e in extensions
        if isinstance(e, dict) and str(e.get("url", "")).endswith("insee-code")
    ] + [address.get("district")]
    for value in candidates:
        if isinstance(value, str) and _COG.match(value.strip().upper()):
            return value.strip().upper()
    return None


def departement_of_insee(cog: str) -> str | None:
    cog = cog.strip().upper()
    if not _COG.match(cog):
        return None
    if cog.startswith("99"):
        return ABROAD
    return cog[:3] if cog.startswith(("97", "98")) else cog[:2]


def departement_of_postal_code(postal_code: str | None) -> str | None:
    code = (postal_code or "").strip()
    if not (len(code) == 5 and code.isascii() and code.isdigit()) or code.startswith("00"):
        return None
    if code.startswith("20"):
        return "2A" if code < "20200" else "2B"
    if code in COLLECTIVITY_POSTAL_CODES:
        return COLLECTIVITY_POSTAL_CODES[code]
    if code.startswith("97"):
        return code[:3] if "971" <= code[:3] <= "976" else None
    if code.startswith("98"):
        if code == "98000":
            return ABROAD  # Monaco
        return code[:3] if code[:3] in ("986", "987", "988") else None
    return code[:2]

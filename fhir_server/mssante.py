"""Certificates for laboratories' MSSanté mailboxes: the ANS directory extract, the routing rule of
the SI-DEP laboratory guide (09/07/2021) and the e-mail it prescribes. Domain only: no database
(the loaded directory is `storage/mailboxes.py`), no SMTP (the channel sends what this builds).

When a patient has neither a valid mobile number nor an e-mail address, the certificate goes to
their laboratory. A laboratory (LBM) has either one mailbox (BAL) per site (FINESS géographique)
or one shared by its legal entity (FINESS juridique); only organisational BALs (type ORG) whose
"Service de rattachement" contains "@SIDEP" ("estampillées SI-DEP") count. With nG of them for
the site and nJ for the legal entity: the site's if nG = 1, the legal entity's if nJ = 1 and
nG = 0, else a routing failure operators see, with both FINESS numbers and counts.

The directory extract (annuaire MSSanté, ANS): UTF-8, `|`-separated, one header row, 31 columns
read by position (HEADER). Column 7 holds a FINESS bare (9 characters) or as idNat_Struct ("1" +
FINESS); both are accepted.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate
from functools import lru_cache
from os import PathLike
from pathlib import Path

from profiles.validators import DOSSIER_SYSTEM_PREFIX, FINESS_SYSTEMS, INS_SYSTEMS
from workers.channels import Permanent

from .dossier import LOINC, PARIS, SNOMED

# -- the directory extract ---------------------------------------------------------------------
# Columns 1-28 as the guide lists them; it then names the cedex office and says the last three
# are postal code, département and country, which cannot all fit in 31: the cedex office (which
# repeats the postal code) is taken to be part of the distribution line. Nothing after column 19
# is read, and only the count of the header is checked, so this choice changes no parse.
HEADER = (
    "Type de BAL",
    "Adresse BAL",
    "Type identifiant PP",
    "Identifiant PP",
    "Identification nationale PP",
    "Type identifiant structure",
    "Identification Structure",
    "Service de rattachement",
    "Civilité d'exercice",
    "Nom d'exercice",
    "Prénom d'exercice",
    "Catégorie professionnelle",
    "Libellé catégorie professionnelle",
    "Code profession",
    "Libellé profession",
    "Code savoir-faire",
    "Libellé savoir-faire",
    "Dématérialisation",
    "Raison Sociale structure BAL",
    "Enseigne commerciale structure BAL",
    "Complément localisation structure BAL",
    "Complément point géographique structure BAL",
    "Numéro voie structure BAL",
    "Indice répétition voie structure BAL",
    "Code type de voie structure BAL",
    "Type de voie structure BAL",
    "Libellé Voie structure BAL",
    "Mention distribution structure BAL",
    "Code postal structure BAL",
    "Département structure BAL",
    "Pays structure BAL",
)
COLUMNS = len(HEADER)
SEPARATOR = "|"
KIND, ADDRESS, STRUCTURE_ID_TYPE, STRUCTURE_ID, SERVICE, ORGANISATION = 0, 1, 5, 6, 7, 18
ORG = "ORG"
STAMP = "@SIDEP"
# Structure identifier types that are not FINESS numbers (SIREN, SIRET, RPPS cabinet): a 9-digit
# SIREN would otherwise pass for a FINESS.
NOT_FINESS_TYPES = frozenset({"2", "3", "4", "SIREN", "SIRET", "RPPS"})


class ExtractError(ValueError):
    """The extract is not what the directory loader reads; the message names the line, never its
    content (personal mailboxes carry professionals' names)."""


@dataclass(frozen=True)
class MailboxEntry:
    """One line of the extract."""

    kind: str  # PER | ORG | APP | CAB
    address: str
    structure_id_type: str
    finess: str | None  # the structure's FINESS, 9 characters, when column 7 holds one
    service: str  # "Service de rattachement"
    organisation: str  # "Raison Sociale structure BAL"


def normalise_finess(value: str | None) -> str | None:
    """A FINESS from column 7: bare (9 characters) or idNat_Struct ("1" + FINESS); None otherwise."""
    value = (value or "").strip().upper()
    if len(value) == 10 and value.startswith("1"):
        value = value[1:]
    if len(value) == 9 and (value.isdigit() or (value[:2] in ("2A", "2B") and value[2:].isdigit())):
        return value
    return None


def parse_extract(source: str | PathLike | Iterable[str]) -> Iterator[MailboxEntry]:
    """The entries of an extract (a path, or its lines), read as a stream. Raises ExtractError on a
    header without exactly 31 columns or a line without them (a truncated file must not replace a
    good directory)."""
    if isinstance(source, (str, PathLike)):
        with open(source, encoding="utf-8-sig", newline="") as lines:
            yield from _entries(lines)
    else:
        yield from _entries(source)


def _entries(lines: Iterable[str]) -> Iterator[MailboxEntry]:
    numbered = enumerate(lines, start=1)
    header = next(numbered, None)
    if header is None:
        raise ExtractError("L'extraction de l'annuaire MSSanté est vide (pas de ligne d'en-tête)")
    found = len(header[1].lstrip("\ufeff").rstrip("\r\n").split(SEPARATOR))
    if found != COLUMNS:
        raise ExtractError(f"En-tête de l'extraction de l'annuaire MSSanté : {found} colonnes au lieu de {COLUMNS}")
    for number, line in numbered:
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        fields = line.split(SEPARATOR)
        if len(fields) != COLUMNS:
            raise ExtractError(
                f"Ligne {number} de l'extraction de l'annuaire MSSanté : {len(fields)} colonnes au lieu de {COLUMNS}"
            )
        yield _entry(fields)


def _entry(fields: list[str]) -> MailboxEntry:
    id_type = fields[STRUCTURE_ID_TYPE].strip()
    finess = None if id_type.upper() in NOT_FINESS_TYPES else normalise_finess(fields[STRUCTURE_ID])
    return MailboxEntry(
        kind=fields[KIND].strip().upper(),
        address=fields[ADDRESS].strip(),
        structure_id_type=id_type,
        finess=finess,
        service=fields[SERVICE].strip(),
        organisation=fields[ORGANISATION].strip(),
    )


def is_stamped(entry: MailboxEntry) -> bool:
    """ "Estampillée SI-DEP": its "Service de rattachement" contains @SIDEP (in any case: the
    laboratories type it by hand)."""
    return STAMP in entry.service.upper()


def is_routable(entry: MailboxEntry) -> bool:
    """A mailbox certificates may go to: organisational, stamped, of a FINESS structure."""
    return entry.kind == ORG and is_stamped(entry) and entry.finess is not None and bool(entry.address)


# -- the routing rule --------------------------------------------------------------------------
SITE, LEGAL = "site", "legal"


@dataclass(frozen=True)
class Route:
    """Where a laboratory's certificates go: `address` and `level` ("site" | "legal"), or None and
    `reason` (French, for operators: both FINESS numbers and the counts found)."""

    address: str | None
    level: str | None
    site_finess: str | None
    legal_finess: str | None
    site_count: int
    legal_count: int
    reason: str | None = None


def _distinct(addresses: Iterable[str]) -> list[str]:
    """Addresses once each, whatever their case (the extract repeats some)."""
    seen: dict[str, str] = {}
    for address in addresses:
        seen.setdefault(address.strip().lower(), address.strip())
    return list(seen.values())


def decide(
    site_finess: str | None, legal_finess: str | None, site_addresses: list[str], legal_addresses: list[str]
) -> Route:
    """The guide's rule on the stamped ORG mailboxes found for the site and for the legal entity."""
    site, legal = _distinct(site_addresses), _distinct(legal_addresses)
    counts = (site_finess, legal_finess, len(site), len(legal))
    if len(site) == 1:
        return Route(site[0], SITE, *counts)
    if not site and len(legal) == 1:
        return Route(legal[0], LEGAL, *counts)
    return Route(None, None, *counts, reason=failure_reason(*counts))


def failure_reason(site_finess: str | None, legal_finess: str | None, site_count: int, legal_count: int) -> str:
    return (
        "Aucune BAL MSSanté estampillée @SIDEP unique : "
        f"FINESS site {site_finess or 'inconnu'} ({site_count}), "
        f"FINESS juridique {legal_finess or 'inconnu'} ({legal_count})"
    )


# -- what the e-mail states --------------------------------------------------------------------
SEXES = {"male": "Masculin", "female": "Féminin"}
UNDETERMINED = "Indéterminé"
UNKNOWN = "non renseigné"
_WORDING = Path(__file__).resolve().parent.parent / "operations" / "certificates" / "wording.json"
RESULT_CODES = {"260373001": "detected", "260415000": "not-detected", "419984006": "inconclusive"}


@dataclass(frozen=True)
class CertificateFacts:
    """The facts of one result as the e-mail writes them (French formats)."""

    site_finess: str | None
    dossier: str | None
    family: str
    given: str
    sex: str  # Masculin | Féminin | Indéterminé
    birth_date: str  # dd/mm/yyyy (mm/yyyy, yyyy for partial dates)
    ins: str | None  # the matricule INS
    test_code: str | None  # LOINC
    test_label: str | None
    sampled_at: str | None  # dd/mm/yyyy HH:MM, Europe/Paris
    integrated_at: str | None
    result: str | None


@lru_cache(maxsize=1)
def _result_wording() -> dict:
    """The certificate's own French result wording (the guide's), so the e-mail and the PDF agree."""
    return json.loads(_WORDING.read_text(encoding="utf-8"))["results"]


def french_datetime(value: datetime | str | None) -> str | None:
    """dd/mm/yyyy HH:MM in Paris time, from an aware datetime or a FHIR dateTime."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(PARIS)
    return value.strftime("%d/%m/%Y %H:%M")


def french_date(value: str | None) -> str:
    """A FHIR date (YYYY, YYYY-MM, YYYY-MM-DD) the French way round."""
    return "/".join(reversed((value or "").split("-"))) or UNKNOWN


def _official_name(patient: dict) -> dict:
    names = [n for n in patient.get("name") or [] if isinstance(n, dict)]
    official = [n for n in names if n.get("use") == "official"]
    return (official or names or [{}])[0]


def _given(name: dict) -> str:
    for extension in name.get("extension") or []:  # FR Core: the full list of given names wins
        if str(extension.get("url", "")).endswith("birth-list-given-name") and extension.get("valueString"):
            return " ".join(extension["valueString"].split())
    return " ".join(g.strip() for g in name.get("given") or [] if isinstance(g, str) and g.strip())


def _identifier(resource: dict | None, accept) -> str | None:
    for identifier in (resource or {}).get("identifier") or []:
        if isinstance(identifier, dict) and accept(identifier.get("system") or "") and identifier.get("value"):
            return identifier["value"]
    return None


def _coding(concept: dict | None, system: str) -> dict | None:
    for coding in (concept or {}).get("coding") or []:
        if isinstance(coding, dict) and coding.get("system") == system and coding.get("code"):
            return coding
    return None


def _result_text(observation: dict) -> str | None:
    concept = observation.get("valueCodeableConcept")
    coding = _coding(concept, SNOMED)
    if coding and coding["code"] in RESULT_CODES:
        return _result_wording()[RESULT_CODES[coding["code"]]]["fr"]
    if coding:
        return coding.get("display") or coding["code"]
    return (concept or {}).get("text")


def _sampled_at(specimen: dict | None, observation: dict) -> str | None:
    collection = (specimen or {}).get("collection") or {}
    value = collection.get("collectedDateTime") or (collection.get("collectedPeriod") or {}).get("start")
    # Without a Specimen, the observation's effective time is the sampling time by convention.
    return french_datetime(value or observation.get("effectiveDateTime"))


def _is_dossier(system: str) -> bool:
    return system.startswith(DOSSIER_SYSTEM_PREFIX)


def service_request_id(resources: dict) -> str | None:
    """The id of the ServiceRequest the result carries out (the report's basedOn, else the
    observation's), for the caller to read."""
    for resource in (resources.get("report"), resources.get("observation")):
        for reference in (resource or {}).get("basedOn") or []:
            parts = str((reference or {}).get("reference") or "").split("/")
            if "_history" in parts:
                parts = parts[: parts.index("_history")]
            if len(parts) >= 2 and parts[-2] == "ServiceRequest":
                return parts[-1]
    return None


def certificate_facts(
    resources: dict, service_request: dict | None, integrated_at: datetime | str | None
) -> CertificateFacts:
    """The e-mail's facts from the resources of `operations.generate_certificate.load_result_resources`
    (report, observation, specimen, patient, organization) and the result's ServiceRequest."""
    observation = resources.get("observation") or {}
    patient = resources.get("patient") or {}
    name = _official_name(patient)
    loinc = _coding(observation.get("code"), LOINC)
    dossier = _identifier(service_request, _is_dossier) or _identifier(resources.get("report"), _is_dossier)
    return CertificateFacts(
        site_finess=_identifier(resources.get("organization"), FINESS_SYSTEMS.__contains__),
        dossier=dossier,
        family=" ".join(str(name.get("family") or "").split()),
        given=_given(name),
        sex=SEXES.get(patient.get("gender"), UNDETERMINED),
        birth_date=french_date(patient.get("birthDate")),
        ins=_identifier(patient, INS_SYSTEMS.__contains__),
        test_code=loinc["code"] if loinc else None,
        # the label in French (Bioloinc) is what laboratories send as code.text
        test_label=(observation.get("code") or {}).get("text") or (loinc or {}).get("display"),
        sampled_at=_sampled_at(resources.get("specimen"), observation),
        integrated_at=french_datetime(integrated_at),
        result=_result_text(observation),
    )


# -- the e-mail --------------------------------------------------------------------------------
SUBJECT = "[Projet SI-DEP] Certificat de test : {site} | {dossier} | {family} | {given}"
BODY = (
    "Bonjour, \n"
    "\n"
    "Vous avez transmis vers l’application SI-DEP un résultat de test Covid-19 ne comportant aucun "
    "moyen de contacter le patient. Un document certifiant le résultat de ce test a été produit mais "
    "ne peut donc pas être transmis au patient. Veuillez trouver ci-joint le certificat et ci-dessous "
    "les caractéristiques du patient, du test et le résultat :\n"
    "\n"
    "Patient concerné : \n"
    "Nom : {family}\n"
    "Prénom : {given}\n"
    "Sexe : {sex}\n"
    "Date de naissance : {birth_date}\n"
    "Matricule Identifiant National de Santé (INS) : {ins}\n"
    "\n"
    "Test réalisé : Type d’analyse (voir le site de Bioloinc pour la terminologie): {test_code} {test_label} \n"
    "Identifiant de la structure ayant réalisé le test : {site} \n"
    "Date de prélèvement : {sampled_at}\n"
    "Date d’intégration du résultat dans l’application SI-DEP : {integrated_at}\n"
    "\n"
    "Résultat du test : {result} \n"
    "\n"
    "N’hésitez pas à promouvoir auprès du patient les différents outils numériques : l’application "
    "mobile TousAntiCovid, https://mesconseilscovid.sante.gouv.fr pour obtenir des conseils "
    "personnalisés en fonction de sa situation et https://sante.fr/recherche/trouver/DepistageCovid "
    "pour trouver facilement les lieux de dépistage les plus proches de chez soi et aller s’y faire "
    "tester, en ayant préalablement rempli le formulaire de pré-enregistrement. \n"
    "\n"
    "En vous remerciant pour votre rôle déterminant dans la lutte contre l’épidémie.\n"
    "\n"
    "Ne tentez pas de répondre à ce mail envoyé automatiquement par SI-DEP, votre réponse ne serait "
    "pas traitée.\n"
    "\n"
    "Bien cordialement,\n"
    "\n"
    "L’équipe projet SI-DEP"
)


def _one_line(text: str) -> str:
    """A fact on one line: line breaks and control characters would break the Subject header
    (and let a name add lines to the body)."""
    kept = "".join(" " if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c for c in str(text))
    return " ".join(kept.split())


def _shown(facts: CertificateFacts) -> dict[str, str]:
    """Every fact as the e-mail writes it; what the result did not say is "non renseigné"."""
    values = {name: _one_line(getattr(facts, name) or "") for name in CertificateFacts.__dataclass_fields__}
    shown = {name: value or UNKNOWN for name, value in values.items()}
    shown["site"] = shown.pop("site_finess")
    return shown


def subject(facts: CertificateFacts) -> str:
    return SUBJECT.format(**_shown(facts))


def body(facts: CertificateFacts) -> str:
    return BODY.format(**_shown(facts))


def safe_filename_part(text: str) -> str:
    """A fact as a file name part: no path separator (nor control character: `_one_line`); accents kept."""
    return "".join("-" if char in "/\\" else char for char in unicodedata.normalize("NFC", _one_line(text)))


def attachment_name(facts: CertificateFacts) -> str:
    shown = _shown(facts)
    parts = (shown["site"], shown["dossier"], shown["family"].upper(), shown["given"])
    return "_".join(safe_filename_part(part) for part in parts) + ".pdf"


def certificate_email(
    facts: CertificateFacts, sender: str, to: str, pdf: bytes, message_id: str, max_bytes: int
) -> EmailMessage:
    """The guide's message with the certificate attached. Raises Permanent when the whole message
    (headers, body and encoded PDF) would exceed `max_bytes` (MSSanté operators refuse larger ones)."""
    message = EmailMessage(policy=SMTP)
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject(facts)
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = message_id if message_id.startswith("<") else f"<{message_id}>"
    message.set_content(body(facts), subtype="plain", charset="utf-8", cte="quoted-printable")
    message.add_attachment(pdf, maintype="application", subtype="pdf", filename=attachment_name(facts))
    size = len(message.as_bytes())
    if size > max_bytes:
        raise Permanent(
            f"Message MSSanté de {size} octets avec son certificat : au-delà de la limite de {max_bytes} octets"
        )
    return message

"""Synthetic MSSanté directory extracts (the ANS file's shape: fhir_server/mssante.py HEADER) for
the laboratories of the generator: stamped site and legal-entity mailboxes, and the lines the
routing must ignore (a personal mailbox stamped @SIDEP, an organisational one without the stamp).

A mailbox is a dict of the columns it fills, by short name (COLUMN_NAMES); the others are empty.
Addresses are under mssante.example.fr: nothing here is a real mailbox.
"""

from __future__ import annotations

import random
import unicodedata
from os import PathLike

from ..mssante import COLUMNS, HEADER, SEPARATOR
from . import data
from .generator import Laboratory, Site, make_rpps

DOMAIN = "mssante.example.fr"
# short names of the columns a synthetic mailbox fills, and their positions (0-based)
COLUMN_NAMES = {
    "kind": 0,
    "address": 1,
    "pp_id_type": 2,
    "pp_id": 3,
    "pp_national_id": 4,
    "structure_id_type": 5,
    "structure_id": 6,
    "service": 7,
    "civility": 8,
    "family": 9,
    "given": 10,
    "profession_code": 13,
    "profession": 14,
    "organisation": 18,
    "brand": 19,
    "street_number": 22,
    "street": 26,
    "postal_code": 28,
    "departement": 29,
    "country": 30,
}
FINESS_TYPE = "1"  # "Type identifiant structure": FINESS
STAMPED_SERVICE = "Laboratoire - résultats COVID @SIDEP"


def line(mailbox: dict) -> str:
    """One extract line; unknown column names are an error (a test would silently test nothing)."""
    fields = [""] * COLUMNS
    for name, value in mailbox.items():
        fields[COLUMN_NAMES[name]] = "" if value is None else str(value)
    return SEPARATOR.join(fields)


def extract_lines(mailboxes: list[dict], header: tuple[str, ...] = HEADER) -> list[str]:
    return [SEPARATOR.join(header), *(line(m) for m in mailboxes)]


def write_extract(path: str | PathLike, mailboxes: list[dict], header: tuple[str, ...] = HEADER) -> None:
    """Write an extract file (UTF-8, one header row, `|`-separated) holding `mailboxes`."""
    with open(path, "w", encoding="utf-8", newline="") as out:
        for text in extract_lines(mailboxes, header):
            out.write(text + "\r\n")


def _organisational(address: str, structure_id: str, service: str, organisation: str) -> dict:
    return {
        "kind": "ORG",
        "address": address,
        "structure_id_type": FINESS_TYPE,
        "structure_id": structure_id,
        "service": service,
        "organisation": organisation,
        "country": "France",
    }


def site_mailbox(site: Site, local: str = "resultats", idnat: bool = False) -> dict:
    """A stamped organisational mailbox of one site (FINESS géographique)."""
    structure_id = ("1" if idnat else "") + site.finess
    mailbox = _organisational(f"{local}.{site.finess}@{DOMAIN}", structure_id, STAMPED_SERVICE, site.name)
    return {**mailbox, "postal_code": site.postal_code, "departement": site.postal_code[:2]}


def legal_mailbox(lab: Laboratory, local: str = "sidep", idnat: bool = True) -> dict:
    """A stamped organisational mailbox of a legal entity (FINESS juridique), by default written
    as idNat_Struct ("1" + FINESS), as the extract often does."""
    structure_id = ("1" if idnat else "") + lab.finess
    return _organisational(f"{local}.{lab.finess}@{DOMAIN}", structure_id, STAMPED_SERVICE, lab.name)


def unstamped_mailbox(finess: str, organisation: str = "", local: str = "secretariat") -> dict:
    """An organisational mailbox of a structure, without the @SIDEP stamp: not for certificates."""
    return _organisational(f"{local}.{finess}@{DOMAIN}", finess, "Secrétariat", organisation)


def personal_mailbox(rng: random.Random, finess: str, organisation: str = "") -> dict:
    """A biologist's personal mailbox (PER) in the structure, stamped @SIDEP all the same: ignored."""
    family, given = rng.choice(data.FAMILY), rng.choice(data.GIVEN_FEMALE + data.GIVEN_MALE)
    rpps = make_rpps(rng)
    local = unicodedata.normalize("NFKD", f"{given}.{family}").encode("ascii", "ignore").decode()
    local = local.lower().replace(" ", "-").replace("'", "")
    return {
        "kind": "PER",
        "address": f"{local}.{rpps[-4:]}@{DOMAIN}",
        "pp_id_type": "8",
        "pp_id": rpps,
        "pp_national_id": "8" + rpps,
        "structure_id_type": FINESS_TYPE,
        "structure_id": finess,
        "service": STAMPED_SERVICE,
        "family": family.upper(),
        "given": given,
        "profession_code": "21",
        "profession": "Pharmacien",
        "organisation": organisation,
        "country": "France",
    }


def directory_for(rng: random.Random, labs: list[Laboratory]) -> list[dict]:
    """A plausible directory: half the laboratories with a stamped mailbox per site, the others one
    for the legal entity; each with the lines routing must ignore."""
    mailboxes = []
    for i, lab in enumerate(labs):
        if i % 2 == 0:
            mailboxes += [site_mailbox(site, idnat=rng.random() < 0.3) for site in lab.sites]
        else:
            mailboxes.append(legal_mailbox(lab, idnat=rng.random() < 0.5))
        mailboxes.append(unstamped_mailbox(lab.sites[0].finess, lab.sites[0].name))
        mailboxes.append(personal_mailbox(rng, lab.sites[0].finess, lab.sites[0].name))
    return mailboxes

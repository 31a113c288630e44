"""ICAO Doc 9303 transliteration of names, for the DCC `fnt` / `gnt` fields.

The result uses only A-Z and the filler `<`: letters with diacritics follow the ICAO table
(icao_transliteration.json), spaces and hyphens become one filler, apostrophes are omitted (ICAO
9303 Part 3; the DCC schema's own example turns "d'Červenková Panklová" into
"DCERVENKOVA<PANKLOVA").
"""

from __future__ import annotations

import json
import re
import unicodedata
from functools import lru_cache
from pathlib import Path

_TABLE_FILE = Path(__file__).with_name("icao_transliteration.json")
_NOT_ALLOWED = re.compile(r"[^A-Z<]")
_FILLER_RUNS = re.compile(r"<{2,}")


@lru_cache(maxsize=1)
def _rules() -> tuple[dict[int, str], str]:
    data = json.loads(_TABLE_FILE.read_text(encoding="utf-8"))
    filler = data["filler"]
    table = {ord(k): v for k, v in data["characters"].items()}
    table.update({ord(c): filler for c in data["separators_to_filler"]})
    table.update({ord(c): "" for c in data["omitted"]})
    return table, filler


def _strip_remaining_diacritics(text: str) -> str:
    """Letters missing from the ICAO table (rare Latin letters) lose their combining marks."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def transliterate(name: str) -> str:
    """'Lefèvre-Dubois' -> 'LEFEVRE<DUBOIS'; "N'Diaye" -> 'NDIAYE'; 'Œuvray' -> 'OEUVRAY'."""
    table, filler = _rules()
    # Upper-case first: the table lists capitals, and str.upper() already maps ß to SS.
    text = unicodedata.normalize("NFC", name.strip()).upper().translate(table)
    text = _strip_remaining_diacritics(text).upper()
    text = _NOT_ALLOWED.sub("", text)
    return _FILLER_RUNS.sub(filler, text).strip(filler)

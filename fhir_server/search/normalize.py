"""String normalisation for search: case- and accent-insensitive, as FHIR string search asks."""

import unicodedata
from functools import lru_cache

_LIGATURES = str.maketrans({"œ": "oe", "Œ": "oe", "æ": "ae", "Æ": "ae", "ß": "ss", "ø": "o", "Ø": "o"})


@lru_cache(maxsize=100_000)  # names, cities and codes repeat: folding is on every write's hot path
def fold(text: str) -> str:
    if text.isascii():
        return text.casefold().strip()
    decomposed = unicodedata.normalize("NFKD", text.translate(_LIGATURES))
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold().strip()

"""Synthetic pseudonymised records (storage/pseudonymised.py), for the benchmarks and tests that
need many of them without ingesting as many result dossiers: the fields of
fhir_server/pseudonyms.py RECORD_FIELDS with plausible values, reproducible from a seed.

    records(1_000_000, seed=7, days=120, end=date(2026, 11, 30))
"""

from __future__ import annotations

import base64
import random
from collections.abc import Iterator
from datetime import date, timedelta

DEPARTEMENTS = (
    *(f"{n:02d}" for n in range(1, 96) if n != 20),
    "2A",
    "2B",
    "971",
    "972",
    "973",
    "974",
    "976",
)
AGE_CLASSES = ("09", "19", "29", "39", "49", "59", "69", "79", "89", "90")
TEST_TYPES = (("naat", 0.6), ("antigen", 0.35), ("serology", 0.05))
PERFORMERS = (("laboratoire", 0.7), ("pharmacie", 0.2), ("infirmier", 0.05), ("medecin", 0.05))


def records(n: int, seed: int = 1, days: int = 90, end: date | None = None) -> Iterator[dict]:
    """`n` items for PseudonymisedRecords.append: `{"result", "rid", "rec"}`, sampled over the
    `days` days up to `end` (today by default), about one in ten positive."""
    rng = random.Random(seed)
    end = end or date.today()
    for index in range(n):
        yield {"result": f"v1.r.{_digest(rng)}", "rid": f"synthetic-{seed}-{index}", "rec": record(rng, end, days)}


def record(rng: random.Random, end: date, days: int) -> dict:
    test_type = _weighted(rng, TEST_TYPES)
    positive = rng.random() < (0.15 if test_type == "antigen" else 0.08)
    return {
        "pseudonym": f"v1.{rng.choice('it')}.{_digest(rng)}",
        "key_version": 1,
        "age_class": rng.choice(AGE_CLASSES),
        "sex": rng.choice("MF"),
        "departement": rng.choice(DEPARTEMENTS),
        "test_type": test_type,
        "result": "detected" if positive else "not-detected",
        "sampling_date": (end - timedelta(days=rng.randrange(days))).isoformat(),
        "performer_type": _weighted(rng, PERFORMERS),
        "finess": f"{rng.randrange(10**8, 10**9)}",
    }


def _digest(rng: random.Random) -> str:
    return base64.b32encode(rng.randbytes(16)).decode().rstrip("=").lower()


def _weighted(rng: random.Random, pairs) -> str:
    point, total = rng.random(), 0.0
    for value, weight in pairs:
        total += weight
        if point < total:
            return value
    return pairs[-1][0]

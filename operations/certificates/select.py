"""Which certificates one result gives (rules.json):
- a NAAT or antigen result, detected or not detected: an EU DCC test certificate, valid (CWT
  `exp`) 72 hours after sampling when negative, 180 days when positive;
- a detected NAAT or antigen result, from 11 until 180 days after sampling: also a recovery
  certificate;
- serology and inconclusive results: the result sheet only, no DCC;
- a result sampled more than 3 months ago: 410 (it is past the retention period);
- a result that is not final: 409 (checked when the facts are read, see facts.py).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from dateutil.relativedelta import relativedelta

from fhir_server.outcome import FhirError

from .facts import CertificateFacts

_RULES_FILE = Path(__file__).with_name("rules.json")
SAMPLING_EXPRESSION = "Specimen.collection.collectedDateTime"
# Laboratory clocks drift: a sampling time slightly ahead of ours is tolerated.
CLOCK_SKEW = dt.timedelta(minutes=15)


@lru_cache(maxsize=1)
def rules() -> dict:
    return json.loads(_RULES_FILE.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class PlannedDcc:
    type: str  # "test" | "recovery"
    group: str  # DCC payload key: "t" | "r"
    expires_at: dt.datetime  # CWT exp
    valid_from: dt.date | None = None  # recovery df
    valid_until: dt.date | None = None  # recovery du


def gives_dcc(facts: CertificateFacts) -> bool:
    return facts.test_kind in rules()["dcc_kinds"] and facts.result in rules()["dcc_results"]


def require_within_retention(facts: CertificateFacts, now: dt.datetime) -> None:
    limit = facts.sampled_at + relativedelta(months=rules()["retention_months"])
    if now > limit:
        raise FhirError.of(
            410,
            "business-rule",
            "The result was sampled more than 3 months ago: certificates are no longer available.",
            "Le prélèvement date de plus de 3 mois : les certificats ne sont plus disponibles.",
            SAMPLING_EXPRESSION,
        )
    if facts.sampled_at > now + CLOCK_SKEW:
        raise FhirError.of(
            422,
            "business-rule",
            "The sampling time is in the future.",
            "La date de prélèvement est dans le futur.",
            SAMPLING_EXPRESSION,
        )


def _test_plan(facts: CertificateFacts, now: dt.datetime) -> PlannedDcc:
    """A test certificate lasts from the sampling, not from when it is (re)made: 72 hours after
    the sampling for a negative result, whenever the patient downloads it."""
    validity = rules()["cwt_validity"]
    if facts.result == "not-detected":
        expires = facts.sampled_at + dt.timedelta(hours=validity["test_not_detected_hours"])
    else:
        expires = facts.sampled_at + dt.timedelta(days=validity["test_detected_days"])
    return PlannedDcc("test", "t", expires)


def _recovery_plan(facts: CertificateFacts, now: dt.datetime) -> PlannedDcc | None:
    recovery = rules()["recovery"]
    if facts.result != "detected" or facts.test_kind not in recovery["kinds"]:
        return None
    starts = facts.sampled_at + dt.timedelta(days=recovery["from_days"])
    ends = facts.sampled_at + dt.timedelta(days=recovery["until_days"])
    if not starts <= now <= ends:
        return None
    sampling_day = facts.sampled_at.astimezone(dt.UTC).date()
    return PlannedDcc(
        "recovery",
        "r",
        ends,
        sampling_day + dt.timedelta(days=recovery["from_days"]),
        sampling_day + dt.timedelta(days=recovery["until_days"]),
    )


def plan_certificates(facts: CertificateFacts, now: dt.datetime) -> list[PlannedDcc]:
    """The DCCs to issue now for this result (empty: result sheet only)."""
    require_within_retention(facts, now)
    if not gives_dcc(facts):
        return []
    recovery = _recovery_plan(facts, now)
    return [_test_plan(facts, now)] + ([recovery] if recovery else [])

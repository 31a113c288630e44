"""Epidemiological aggregates of the pseudonymised records, in the layout of Santé publique
France's open data file `sp-pos-quot-dep` ("Données relatives aux résultats des tests
virologiques COVID-19 (SI-DEP)"): one row per département (`dep`), sampling day (`jour`) and age
class (`cl_age90`: 09, 19 … 89, 90, and 0 for all ages), with `P` the positive tests and `T`
the tests.

What is counted (storage/pseudonymised.py `daily_counts`): the current record of each result
(a corrected result counts once, as corrected; a withdrawn one nowhere), by sampling day.
- `T` counts the results that say something of the person: detected and not-detected.
  Inconclusive results are left out of both counts, as Santé publique France's positivity rate
  (positive tests over tests with a positive or negative result) leaves them out.
- The all-ages row (`cl_age90` = 0) counts every result of the day and département, those whose
  age class is unknown (a partial or wrong birth date) included, so it may exceed the sum of the
  classes by them. A result whose département is unknown is in no row.
- Rows are only those with at least one test (the public file also lists zeros).
- No `pop` column: the platform holds no population figures (INSEE's estimates are what Santé
  publique France divides by); a rate per inhabitant is for whoever joins them.

A query is a date range (`from`, `to`, both included; by default the last DEFAULT_DAYS days,
Paris time, today included; at most AGGREGATES_MAX_DAYS days), a test type (naat, antigen,
serology; by default all, summed) and a département (by default all).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from .dossier import PARIS
from .outcome import FhirError
from .pseudonyms import TEST_KINDS
from .storage.pseudonymised import PseudonymisedRecords

DEFAULT_DAYS = 90
ALL_AGES = "0"
COLUMNS = ("dep", "jour", "P", "T", "cl_age90")  # the public file's order, its `pop` left out
DEPARTEMENTS = (
    *(f"{n:02d}" for n in range(1, 20)),
    "2A",
    "2B",
    *(f"{n:02d}" for n in range(21, 96)),
    *(str(n) for n in range(971, 979)),
    "986",
    "987",
    "988",
    "99",  # abroad and Monaco, as the INSEE codes places abroad (pseudonyms.py)
)
_POSITION = {code: index for index, code in enumerate(DEPARTEMENTS)}
TEST_TYPE_LABELS = {"naat": "test PCR (TAAN)", "antigen": "test antigénique", "serology": "sérologie"}


@dataclass(frozen=True)
class Query:
    start: date
    end: date
    test_type: str | None = None
    departement: str | None = None

    @property
    def days(self) -> list[date]:
        return [self.start + timedelta(days=n) for n in range((self.end - self.start).days + 1)]


@dataclass(frozen=True)
class Day:
    jour: date
    P: int
    T: int

    @property
    def positivity(self) -> float | None:
        return positivity(self.P, self.T)


def today() -> date:
    return datetime.now(PARIS).date()


def positivity(positives: int, tests: int) -> float | None:
    """100 × P / T, two decimals; None without a test."""
    return round(100 * positives / tests, 2) if tests else None


# -- the parameters ----------------------------------------------------------------------------
def parse_query(
    values: dict[str, str | None], max_days: int, on: date | None = None, default_days: int = DEFAULT_DAYS
) -> Query:
    """`from`, `to`, `test-type`, `dep` as sent (None or "" when absent), or a 400 naming the
    parameter at fault."""
    end = _day(values.get("to"), "to") or on or today()
    start = _day(values.get("from"), "from") or end - timedelta(days=default_days - 1)
    if start > end:
        raise _bad("from", "'from' must not be after 'to'", "« from » ne peut pas être postérieur à « to »")
    if (end - start).days + 1 > max_days:
        raise _bad(
            "to",
            f"At most {max_days} days can be asked for at once (AGGREGATES_MAX_DAYS)",
            f"Au plus {max_days} jours peuvent être demandés à la fois (AGGREGATES_MAX_DAYS)",
            ["from", "to"],
        )
    test_type = values.get("test-type") or None
    if test_type is not None and test_type not in TEST_KINDS:
        raise _bad(
            "test-type",
            f"'test-type' must be one of {', '.join(TEST_KINDS)}",
            f"« test-type » doit valoir l'un de : {', '.join(TEST_KINDS)}",
        )
    departement = (values.get("dep") or "").strip().upper() or None
    if departement is not None and departement not in DEPARTEMENTS:
        raise _bad(
            "dep",
            "'dep' must be a département code (01 … 95, 2A, 2B, 971 … 978, 986 … 988, 99 for abroad)",
            "« dep » doit être un code de département (01 … 95, 2A, 2B, 971 … 978, 986 … 988, 99 pour l'étranger)",
        )
    return Query(start, end, test_type, departement)


def _day(value: str | None, name: str) -> date | None:
    if not value:
        return None
    try:
        if len(value) != 10:
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError:
        raise _bad(
            name, f"'{name}' must be a day, YYYY-MM-DD", f"« {name} » doit être une date au format AAAA-MM-JJ"
        ) from None


def _bad(name: str, en: str, fr: str, expression: list[str] | None = None) -> FhirError:
    return FhirError.of(400, "invalid", en, fr, expression or [name])


# -- the rows ------------------------------------------------------------------------------------
def rows(records: PseudonymisedRecords, query: Query) -> list[dict]:
    """The file's rows, `{dep, jour, P, T, cl_age90}`, ordered by département, day and age class
    (0 first), as the public file is."""
    counts = records.daily_counts(query.start, query.end, query.test_type, query.departement)
    table: dict[tuple[str, str, str], list[int]] = {}
    for count in counts:
        ages = (ALL_AGES,) if count["age"] is None else (ALL_AGES, count["age"])
        for age in ages:
            cell = table.setdefault((count["dep"], count["jour"], age), [0, 0])
            cell[0] += count["P"]
            cell[1] += count["T"]
    return [
        {"dep": dep, "jour": jour, "P": p, "T": t, "cl_age90": age}
        for (dep, jour, age), (p, t) in sorted(table.items(), key=_file_order)
    ]


def _file_order(item) -> tuple:
    (dep, jour, age), _ = item
    return (_POSITION.get(dep, len(DEPARTEMENTS)), dep, jour, int(age))


def daily(records: PseudonymisedRecords, query: Query) -> list[Day]:
    """Every day of the range with its tests and positives (0 for a day without), for the chart."""
    totals = {
        row["jour"]: row for row in records.daily_totals(query.start, query.end, query.test_type, query.departement)
    }
    return [
        Day(day, totals.get(day.isoformat(), {}).get("P", 0), totals.get(day.isoformat(), {}).get("T", 0))
        for day in query.days
    ]


# -- the files -----------------------------------------------------------------------------------
def to_csv(table: list[dict]) -> str:
    """The public file's layout: `;`-separated, a header line, `\\n` line ends."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";", lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows([row[column] for column in COLUMNS] for row in table)
    return out.getvalue()


def to_json(table: list[dict], query: Query) -> dict:
    return {
        "from": query.start.isoformat(),
        "to": query.end.isoformat(),
        "test-type": query.test_type or "all",
        "dep": query.departement or "all",
        "columns": [*COLUMNS, "positivity"],
        "rows": [{**row, "positivity": positivity(row["P"], row["T"])} for row in table],
    }


def filename(made: datetime | None = None) -> str:
    """The public file's name pattern, with the moment it is made (Paris): the publication time
    stands where Santé publique France's `19hMM` is."""
    made = (made or datetime.now(PARIS)).astimezone(PARIS)
    return f"sp-pos-quot-dep-{made:%Y-%m-%d-%Hh%M}.csv"

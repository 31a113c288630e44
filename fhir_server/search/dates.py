"""FHIR date, dateTime and instant values as closed ranges [lo, hi] of naive UTC datetimes.

Every date value has an implicit precision: "2021" covers the whole year. Storing both ends lets one
query shape answer every prefix (eq, ne, gt, lt, ge, le, sa, eb, ap). MongoDB keeps milliseconds,
so `hi` is the last millisecond of the range.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

MIN = datetime(1, 1, 1)
MAX = datetime(9999, 12, 31, 23, 59, 59, 999000)
ONE_MS = timedelta(milliseconds=1)

_PATTERN = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?P<f>\.\d+)?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


class DateFormatError(ValueError):
    pass


def _add_months(dt: datetime, months: int) -> datetime:
    month = dt.month - 1 + months
    return dt.replace(year=dt.year + month // 12, month=month % 12 + 1)


def parse_range(text: str) -> tuple[datetime, datetime]:
    """'2021-03' -> (2021-03-01 00:00, 2021-03-31 23:59:59.999), in UTC."""
    match = _PATTERN.match(text.strip()) if isinstance(text, str) else None
    if not match:
        raise DateFormatError(f"'{text}' is not a FHIR date, dateTime or instant")
    g = match.groupdict()
    try:
        year = int(g["y"])
        if g["m"] is None:
            start = datetime(year, 1, 1)
            return start, start.replace(year=year + 1) - ONE_MS if year < 9999 else MAX
        month = int(g["m"])
        if g["d"] is None:
            start = datetime(year, month, 1)
            return start, _add_months(start, 1) - ONE_MS
        day = int(g["d"])
        if g["H"] is None:
            start = datetime(year, month, day)
            return start, start + timedelta(days=1) - ONE_MS
        fraction = g["f"] or ""
        micro = int((fraction[1:] + "000000")[:6]) if fraction else 0
        start = datetime(year, month, day, int(g["H"]), int(g["M"]), int(g["S"] or 0), micro - micro % 1000)
    except ValueError as exc:  # e.g. month 13, 30 February
        raise DateFormatError(f"'{text}' is not a valid date: {exc}") from None
    if g["tz"] and g["tz"] != "Z":
        sign = 1 if g["tz"][0] == "+" else -1
        hours, minutes = int(g["tz"][1:3]), int(g["tz"][4:6])
        start -= sign * timedelta(hours=hours, minutes=minutes)
    if fraction:  # '.5' is precise to 100 ms, '.50' to 10 ms; MongoDB keeps milliseconds
        width = timedelta(milliseconds=10 ** max(0, 3 - (len(fraction) - 1)))
    elif g["S"] is not None:
        width = timedelta(seconds=1)
    else:
        width = timedelta(minutes=1)
    return start, start + width - ONE_MS


def period_range(period: dict) -> tuple[datetime, datetime]:
    lo = parse_range(period["start"])[0] if period.get("start") else MIN
    hi = parse_range(period["end"])[1] if period.get("end") else MAX
    return lo, hi


def utc_now() -> datetime:
    """Now, as the naive UTC datetime MongoDB stores (millisecond precision)."""
    now = datetime.now(UTC).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond - now.microsecond % 1000)


def instant(dt: datetime) -> str:
    """A naive UTC datetime as a FHIR instant."""
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"

"""Luxembourg business days, for the agency's promise of delivery within 5 of them."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import holidays

LUXEMBOURG = ZoneInfo("Europe/Luxembourg")


@cache
def _public_holidays(year: int) -> frozenset[date]:
    return frozenset(holidays.country_holidays("LU", years=[year]).keys())


def is_business_day(day: date) -> bool:
    """Monday to Friday and not a Luxembourg public holiday."""
    return day.weekday() < 5 and day not in _public_holidays(day.year)


def add_business_days(start: datetime, days: int) -> datetime:
    """Return the end of the ``days``-th business day after ``start`` (Luxembourg time)."""
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    if days < 0:
        raise ValueError("days must be zero or more")
    current = start.astimezone(LUXEMBOURG).date()
    remaining = days
    while remaining:
        current += timedelta(days=1)
        if is_business_day(current):
            remaining -= 1
    # Due at the end of that day, local time: a request made on Friday afternoon is
    # due the following Friday evening, not at the same minute.
    return datetime.combine(current, time(23, 59, 59), tzinfo=LUXEMBOURG)

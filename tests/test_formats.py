"""Dates read day-first in every language (mycert/formats), « à » in French."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from django.template.defaultfilters import date
from django.utils import translation

WHEN = datetime(2026, 12, 4, 14, 23, tzinfo=ZoneInfo("Europe/Luxembourg"))


@pytest.mark.parametrize(
    ("language", "fmt", "expected"),
    [
        ("en", "SHORT_DATETIME_FORMAT", "4 Dec 2026, 14:23"),
        ("en", "DATETIME_FORMAT", "4 December 2026, 14:23"),
        ("en", "DATE_FORMAT", "4 December 2026"),
        ("en", "SHORT_DATE_FORMAT", "4 Dec 2026"),
        ("fr", "DATETIME_FORMAT", "4 décembre 2026 à 14:23"),
        ("fr", "SHORT_DATETIME_FORMAT", "04/12/2026 14:23"),
        ("fr", "DATE_FORMAT", "4 décembre 2026"),
        ("de", "DATETIME_FORMAT", "4. Dezember 2026 um 14:23 Uhr"),
        ("de", "SHORT_DATETIME_FORMAT", "04.12.2026 14:23"),
    ],
)
def test_dates_are_day_first_with_a_24_hour_clock(language: str, fmt: str, expected: str) -> None:
    with translation.override(language):
        assert date(WHEN, fmt) == expected


def test_an_english_date_typed_day_first_is_read_day_first() -> None:
    from django import forms

    with translation.override("en"):
        field = forms.DateField()
        assert field.clean("04/12/2026") == WHEN.date()

"""Shared pieces: statistics, figures, the run's context, test data."""

from __future__ import annotations

import itertools
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from benchmarks.env import BenchEnv

T = TypeVar("T")


def timed(function: Callable[[], T]) -> tuple[float, T]:
    """Return (milliseconds, result) of one call."""
    start = time.perf_counter()
    result = function()
    return (time.perf_counter() - start) * 1000, result


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def mean(values: Sequence[float]) -> float:
    return float(statistics.fmean(values))


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0–100)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return float(ordered[rank - 1])


def load_average() -> float:
    return os.getloadavg()[0]


@dataclass
class Figure:
    """One line of the results table."""

    key: str
    title: str
    value: float
    unit: str
    reference: float
    reference_label: str
    #: value ÷ reference for costs (lower is better), reference ÷ value never: a
    #: throughput figure states its ratio as value ÷ reference too and says so in ``goal``.
    ratio: float
    goal: str
    met: bool | None
    runs: int
    notes: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Context:
    env: BenchEnv
    quick: bool
    figures: list[Figure] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    log_lines: list[str] = field(default_factory=list)

    def say(self, text: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')} load {load_average():.2f}] {text}"
        print(line, flush=True)
        self.log_lines.append(line)

    def add(self, figure: Figure) -> None:
        self.figures.append(figure)
        met = {True: "met", False: "MISSED", None: "-"}[figure.met]
        self.say(
            f"FIGURE {figure.title}: {figure.value:.4g} {figure.unit} | reference "
            f"{figure.reference:.4g} ({figure.reference_label}) | ratio {figure.ratio:.3f} | "
            f"goal {figure.goal}: {met}"
        )


_counter = itertools.count(1)


def make_professionals(count: int, *, prefix: str) -> list[Any]:
    """``count`` professionals (and their users) in two bulk inserts."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password

    from mycert.models import Professional

    user_model = get_user_model()
    batch = next(_counter)
    unusable = make_password(None)
    users = user_model.objects.bulk_create(
        [
            user_model(username=f"{prefix}{batch}-{i}", password=unusable, is_active=True)
            for i in range(count)
        ],
        batch_size=2000,
    )
    return Professional.objects.bulk_create(
        [
            Professional(
                user=user,
                oidc_subject=f"{prefix}{batch}-{i}",
                professional_id=f"{prefix.upper()}{batch}-{i:06d}",
                given_name="Marie",
                family_name=f"Dupont {i}",
                email=f"marie.dupont.{prefix}{batch}.{i}@cabinet.lu",
                language="fr",
            )
            for i, user in enumerate(users)
        ],
        batch_size=2000,
    )

"""The inner loop (issue 16): how long `make check` takes, beside a yardstick.

Run alone: ``.venv/bin/python benchmarks/inner_loop.py [--runs N]``. It runs the steps of
``make check`` as the Makefile does (ruff, mypy, the unit tests on two processes) N
times and prints the median wall time and CPU time of each. This machine's speed
varies 3–4× from day to day, so it also times the yardstick of the same run: a cold
``manage.py check`` (one Python and Django start-up, what many tests pay), and prints
each step as a multiple of it: compare those multiples across days, not the seconds.
Goal: the whole loop well under a minute.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# The steps of `make check`, as the Makefile writes them.
STEPS: dict[str, list[str]] = {
    "ruff": [f"{BIN}/ruff", "check", "."],
    "ruff format": [f"{BIN}/ruff", "format", "--check", "."],
    "mypy": [f"{BIN}/mypy", "."],
    "unit tests": [
        sys.executable,
        "-m",
        "pytest",
        "-m",
        "not browser and not integration and not slow",
        "-n",
        "2",
        "-q",
        "-p",
        "no:cacheprovider",
    ],
}
YARDSTICK = [sys.executable, "manage.py", "check"]


@dataclass(frozen=True)
class Timing:
    wall: float
    cpu: float


def _environment() -> dict[str, str]:
    # As the Makefile: byte-code caches on, debug settings for mypy's Django plugin.
    env = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
    env["DJANGO_DEBUG"] = "true"
    return env


def _run(command: list[str]) -> Timing:
    """Wall and CPU seconds of one command, its children's CPU included."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    completed = subprocess.run(
        command, cwd=ROOT, env=_environment(), capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if completed.returncode != 0:
        sys.exit(
            f"{' '.join(command)} failed:\n{completed.stdout[-3000:]}{completed.stderr[-3000:]}"
        )
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Timing(wall=wall, cpu=cpu)


def _median(timings: list[Timing]) -> Timing:
    return Timing(
        wall=statistics.median(t.wall for t in timings),
        cpu=statistics.median(t.cpu for t in timings),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each step (median)")
    args = parser.parse_args()

    # Warm the caches a developer's second run has (byte code, mypy's, ruff's).
    for command in STEPS.values():
        _run(command)
    yardstick = _median([_run(YARDSTICK) for _ in range(max(5, args.runs))])
    print(f"yardstick: a cold `manage.py check` takes {yardstick.wall:.2f} s wall")
    print(f"{'step':<12} {'wall s':>8} {'cpu s':>8} {'× start-up':>11}")
    total = 0.0
    for name, command in STEPS.items():
        timing = _median([_run(command) for _ in range(args.runs)])
        total += timing.wall
        ratio = timing.wall / yardstick.wall
        print(f"{name:<12} {timing.wall:8.1f} {timing.cpu:8.1f} {ratio:11.1f}")
    ratio = total / yardstick.wall
    print(f"{'make check':<12} {total:8.1f} {'':>8} {ratio:11.1f}")
    print(f"goal: well under 60 s; {total:.1f} s today, {ratio:.0f} start-ups")
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} processors")


if __name__ == "__main__":
    main()

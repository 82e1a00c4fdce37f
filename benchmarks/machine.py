"""What the figures ran on: CPU, cores, memory, versions, load."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any


def _first(path: str, prefix: str) -> str:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _command(*command: str) -> str:
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"
    return (
        (result.stdout or result.stderr).strip().splitlines()[0]
        if result.returncode == 0
        else "unavailable"
    )


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def describe() -> dict[str, Any]:
    from cryptography.hazmat.backends.openssl.backend import backend

    info: dict[str, Any] = {
        "cpu": _first("/proc/cpuinfo", "model name"),
        "cores": os.cpu_count(),
        "ram_gib": round(int(_first("/proc/meminfo", "MemTotal").split()[0]) / 1024**2, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "openssl_cli": _command("openssl", "version"),
        "openssl_pyca": backend.openssl_version_text(),
        "cryptography": _version("cryptography"),
        "django": _version("django"),
        "celery": _version("celery"),
        "gunicorn": _version("gunicorn"),
        "wrk": _wrk_version(),
        "h2load": _command("h2load", "--version"),
        "gpg": _command("gpg", "--version"),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            info["postgresql"] = cursor.fetchone()[0]
    except Exception:
        info["postgresql"] = _command("psql", "--version")
    try:
        import redis

        from benchmarks.env import BROKER_URL

        info["redis"] = redis.Redis.from_url(BROKER_URL).info("server")["redis_version"]
    except Exception:
        info["redis"] = "unavailable"
    return info


def _wrk_version() -> str:
    # wrk prints its version with -v and exits non-zero.
    try:
        result = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    except OSError:
        return "not installed"
    text = (result.stdout + result.stderr).strip().splitlines()
    return text[0] if text else "unknown"

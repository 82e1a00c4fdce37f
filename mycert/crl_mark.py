"""The CRL number high-water mark, kept on the worker host, outside the database.

The previous CRL, verified with the issuing CA's key, is the evidence of every
revocation a worker signed (``mycert.services.publication``). A database writer cannot
forge it, but could put back an *older* genuine CRL, signed before a revocation, or
delete the CRLs altogether. The mark is the highest cRLNumber this host has signed or
verified (RFC 5280 §5.2.3: the number only increases); a previous CRL below it, or
missing while the mark says there was one, stops publication.

One JSON file (``MYCERT_CRL_HIGH_WATER_FILE``), written by the worker's user only, per
issuing CA key (a new CA starts its own series). Raised only after the CRL's
transaction committed: a rolled-back CRL must not leave a mark the database never
reaches. Several worker processes share the file under an exclusive lock, and the mark
only ever goes up.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings

__all__ = ["CrlMarkError", "raise_mark", "read_mark"]


class CrlMarkError(Exception):
    """The mark file exists but cannot be read or written."""


def _path() -> Path:
    return Path(settings.MYCERT_CRL_HIGH_WATER_FILE)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[int]:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(path.with_suffix(path.suffix + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield descriptor
    finally:
        os.close(descriptor)


def _read(path: Path) -> dict[str, int]:
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise CrlMarkError(f"The CRL high-water mark {path} cannot be read: {exc}") from exc
    if not isinstance(data, dict) or not all(
        isinstance(value, int) and not isinstance(value, bool) for value in data.values()
    ):
        raise CrlMarkError(f"The CRL high-water mark {path} is not a mark file.")
    return data


def read_mark(issuer_key_id: str) -> int | None:
    """The highest cRLNumber known for this issuing CA key; ``None`` before the first."""
    return _read(_path()).get(issuer_key_id)


def raise_mark(issuer_key_id: str, crl_number: int) -> None:
    """Record ``crl_number`` as signed or verified, unless a higher one is recorded."""
    path = _path()
    try:
        with _locked(path):
            marks = _read(path)
            if marks.get(issuer_key_id, -1) >= crl_number:
                return
            marks[issuer_key_id] = crl_number
            tmp = path.with_suffix(path.suffix + ".new")
            descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                json.dump(marks, handle, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
    except OSError as exc:
        raise CrlMarkError(f"The CRL high-water mark {path} cannot be written: {exc}") from exc

"""What the latest CRL lists, kept on the worker host beside the high-water mark.

A re-publication copies the previous CRL's entries and compares the rows with what it
lists (``mycert.services.publication``). The worker process that signed (or verified)
that CRL has this in memory; another process on the same host reads it here instead of
parsing and walking a CRL of 100k entries again. The database is never trusted for it:
the file lives in the folder of ``MYCERT_CRL_HIGH_WATER_FILE`` (the worker host's own
disk, written by the worker's user only), one per issuing CA key, and is used only for
the CRL whose SHA-256 it names, and holds that CRL's DER (the stored copy is not read:
5 MB at 100k entries).

A cache, not evidence of its own, with a SHA-256 over its content; a file that is
absent, for another CRL, damaged or of another version reads as ``None`` and the caller
verifies the stored CRL instead. Rewritten in place after each CRL (no new file renamed
over it: ~0.3 ms of each hourly publication, issue 24 §4) under an exclusive lock on
the file, read under a shared one, so that a reader never meets half a write; a write
cut short (a crash) leaves a file whose SHA-256 does not match, which reads as damaged.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import marshal
import os
from pathlib import Path
from typing import Any

from django.conf import settings

from mycert.locked_files import read_shared

__all__ = ["pack", "read_state", "unpack", "write_state"]

logger = logging.getLogger(__name__)
_VERSION = 3


def _path(issuer_key_id: str) -> Path:
    folder = Path(settings.MYCERT_CRL_HIGH_WATER_FILE).parent
    return folder / f"crl-state-{issuer_key_id}.bin"


def pack(value: Any) -> bytes:
    """A part of a state encoded on its own (marshal-able values), so that a caller can
    record it again, unchanged, without encoding it again (100k serials: ~40 ms)."""
    return marshal.dumps(value)


def unpack(packed: bytes) -> Any:
    """What :func:`pack` encoded, from a state :func:`read_state` checked."""
    # S302: as in read_state, the bytes come from this host's own checked file.
    return marshal.loads(packed)  # noqa: S302


def write_state(issuer_key_id: str, der: bytes, digest: bytes, state: dict[str, Any]) -> None:
    """Record ``state`` (marshal-able values) for the CRL ``der`` whose SHA-256 is
    ``digest``; a failure is logged, never raised (the next process verifies the CRL
    instead)."""
    path = _path(issuer_key_id)
    payload = marshal.dumps((_VERSION, digest, der, state))
    content = hashlib.sha256(payload).digest() + payload
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)  # the readers' shared lock
            written = os.pwrite(descriptor, content, 0)
            if written != len(content):
                raise OSError(f"short write: {written} of {len(content)} bytes")
            os.ftruncate(descriptor, len(content))
        finally:
            os.close(descriptor)
    except OSError:
        logger.exception("the CRL state %s could not be written", path)


def read_state(issuer_key_id: str, digest: bytes) -> tuple[bytes, dict[str, Any]] | None:
    """``(der, state)`` recorded for the CRL whose SHA-256 is ``digest``, else ``None``.

    The file's own SHA-256 covers the DER: intact, it is the DER the writer hashed."""
    path = _path(issuer_key_id)
    try:
        content = read_shared(path)  # never in the middle of a write
    except OSError:
        logger.exception("the CRL state %s could not be read", path)
        return None
    if content is None:
        return None
    payload = memoryview(content)[32:]
    if hashlib.sha256(payload).digest() != content[:32]:
        logger.warning("the CRL state %s is damaged: ignored", path)
        return None
    try:
        # S302: the worker host's own file (trusted, docs/security.md), checked by its
        # SHA-256 above; marshal gives back plain values, it runs nothing.
        version, recorded, der, state = marshal.loads(payload)  # noqa: S302
    except (ValueError, EOFError, TypeError):
        logger.warning("the CRL state %s cannot be read: ignored", path)
        return None
    if version != _VERSION or recorded != digest or not isinstance(der, bytes):
        return None
    if not isinstance(state, dict):
        return None
    return der, state

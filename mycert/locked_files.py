"""Reading a small file that its writer rewrites in place, never in the middle of a write.

The worker host's CRL files (``crl_mark``, ``crl_state``) are overwritten in place with
``pwrite`` under an exclusive ``flock``; a reader takes the shared lock on the same open
file, so it sees the whole old content or the whole new one.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


def read_shared(path: Path) -> bytes | None:
    """The file's content, read under a shared ``flock``; ``None`` when it does not exist.

    Any other failure is the ``OSError`` itself: each caller says what the file is."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH)  # released when the descriptor closes
        with os.fdopen(descriptor, "rb", closefd=False) as handle:
            return handle.read()
    finally:
        os.close(descriptor)

"""What goes wrong with the CA's custody, and which of it is an outage to wait out."""

from __future__ import annotations

from mycert.pki.token import TokenError

__all__ = ["TEMPORARY_CODES", "CustodyError", "is_hsm_outage", "is_temporary"]


class CustodyError(Exception):
    """The CA on disk is missing, unreadable or inconsistent (message says which)."""

    def __init__(self, message: str, *, code: str = "invalid") -> None:
        super().__init__(message)
        #: ``missing``, ``unreadable``, ``passphrase``, ``mismatch``, ``exists``, ``invalid``,
        #: or for the token: ``token`` (module or token unreachable), ``pin``, ``key``
        self.code = code


#: CustodyError codes after which the same work may succeed later with nothing changed
#: here: the token or its module out of reach, a PIN the operator is replacing, a file
#: briefly unreadable. Work that meets them is retried with back-off, not failed.
TEMPORARY_CODES = frozenset({"token", "pin", "unreadable"})


def is_temporary(exc: BaseException) -> bool:
    """Whether ``exc`` is a custody outage to wait out (HSM down, PIN being fixed)."""
    if isinstance(exc, CustodyError):
        return exc.code in TEMPORARY_CODES
    if isinstance(exc, TokenError):
        return exc.code in {"module", "token", "session", "pin"}
    return False


def is_hsm_outage(exc: BaseException) -> bool:
    """Whether ``exc`` says the token, its module or the session is out of reach."""
    if isinstance(exc, CustodyError):
        return exc.code == "token"
    if isinstance(exc, TokenError):
        return exc.code in {"module", "token", "session"}
    return False

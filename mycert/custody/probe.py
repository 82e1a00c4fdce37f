"""Open the CA keys to see that they work (``manage.py check``, the Celery worker's start)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from mycert.custody.errors import CustodyError
from mycert.custody.keys import (
    ROOT_LABEL,
    ca_token,
    token_failure,
    token_signals_mute,
    tokens_close,
    uses_token,
)
from mycert.custody.loading import ca_certificates_load, ca_load, ocsp_responder_load
from mycert.pki.token import TokenError, key_id_for

__all__ = ["Probe", "ca_probe"]


@dataclass(frozen=True)
class Probe:
    """What :func:`ca_probe` found besides working keys."""

    #: The workers' token holds the root key (CKA_ID of root.pem's key, or its label).
    root_key_in_token: bool = False


def _root_key_in_workers_token() -> bool:
    certificates = ca_certificates_load()
    key_id = key_id_for(certificates.root.public_key())  # type: ignore[arg-type]
    try:
        token = ca_token()
        return token.has_private_key(key_id) or ROOT_LABEL in token.labels()
    except TokenError as exc:
        raise token_failure(exc, "root CA") from exc


def ca_probe() -> Probe:
    """Open the CA keys to see that they work; raise :class:`CustodyError` if not.

    With the token backend the probe runs in a forked child: checks also run in Celery's
    parent process before it forks its pool, and that parent must never initialise the
    PKCS#11 library (children would inherit its state, PKCS#11 v2.40 §6.7.6).
    """
    if not uses_token():
        ca_load()
        ocsp_responder_load()
        return Probe()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: probe, report, exit without running the parent's cleanup
        token_signals_mute()  # this process only probes, then exits
        status = 0
        try:
            os.close(read_end)
            try:
                ca_load()
                ocsp_responder_load()
                report: dict[str, object] = {
                    "ok": True,
                    "root_key_in_token": _root_key_in_workers_token(),
                }
            except CustodyError as exc:
                report = {"ok": False, "code": exc.code, "message": str(exc)}
            os.write(write_end, json.dumps(report).encode())
            tokens_close()
        except BaseException:  # noqa: BLE001 - whatever happens, the child must not return into Django
            status = 1
        finally:
            os._exit(status)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    _, wait_status = os.waitpid(pid, 0)
    try:
        report = json.loads(b"".join(chunks))
    except ValueError:
        raise CustodyError(
            f"The PKCS#11 probe process failed (exit status {os.waitstatus_to_exitcode(wait_status)}).",
            code="token",
        ) from None
    if not report["ok"]:
        raise CustodyError(str(report["message"]), code=str(report["code"]))
    return Probe(root_key_in_token=bool(report["root_key_in_token"]))

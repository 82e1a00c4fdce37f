"""The agency's CA in custody (``MYCERT_CA_DIR``, the token): create, import, load once
per process, and the root's ceremonies.

Layout (PEM; with ``MYCERT_CA_BACKEND=file`` the keys are PKCS#8 encrypted with
``MYCERT_CA_KEY_PASSPHRASE``, the responder's with ``MYCERT_OCSP_KEY_PASSPHRASE``)::

    root.pem        root-key.pem        root CA (long-lived, offline: see below)
    issuing.pem     issuing-key.pem     issuing CA, signs professionals' certificates
    ocsp.pem        ocsp-key.pem        delegated OCSP responder (RFC 6960 §4.2.2.2)
    root.crl                            the root's CRL over the issuing CA (DER)
    root-ocsp/<serial>.<hash>.der       the root's OCSP answers on the issuing CA (DER)

With ``MYCERT_CA_BACKEND=pkcs11`` there is no key file: the keys live in the token
(``MYCERT_PKCS11_*``), labelled ``mycert-root``/``mycert-issuing``/``mycert-ocsp`` with
CKA_ID = the certificate's SubjectKeyIdentifier, so each certificate finds its key.

The root key is offline by default (issue 22): in its own token
(``MYCERT_PKCS11_ROOT_TOKEN_LABEL``), or in its own file under its own passphrase
(``MYCERT_ROOT_KEY_PASSPHRASE``), which ``init_ca`` writes for the operator to take away
and the ceremonies read from ``MYCERT_ROOT_KEY_FILE`` or ``--root-key``. Workers never
hold it: ``check`` reports an error on a worker whose token or CA folder does, unless
``MYCERT_ROOT_KEY_ONLINE`` says the operator accepts that a worker can sign a CA.

The CA key is loaded once per process: pyca validates an RSA key on every load, and the
PBKDF2 of a key file costs about 0.1 s (docs/deploy.md).

One module per concept, each importing only those listed before it:

- ``errors``: :class:`CustodyError`, and which failures are outages to wait out;
- ``files``: the CA folder's layout, reading and writing its files;
- ``keys``: passphrases, the offline root, the PKCS#11 token and its signals;
- ``addresses``: the URLs written into certificates;
- ``loading``: the CA, its certificates, the responder and the root, opened and cached;
- ``responder``: the delegated OCSP responder's certificate, issued and renewed;
- ``ceremonies``: the root CRL, the root's OCSP answers, the issuing CA's renewal;
- ``creation``: ``init_ca`` and ``init_ca --import``;
- ``deadlines``: what must be renewed when; ``probe``: whether the keys work.

This package is below ``mycert/services/`` (``services/custody.py`` records what the
token's signals report) and imports nothing of MyCert but ``mycert.pki``.
"""

from __future__ import annotations

from mycert.custody.addresses import (
    ca_issuers_url,
    crl_url,
    ocsp_url,
    root_ca_url,
    root_crl_url,
)
from mycert.custody.ceremonies import (
    ROOT_CRL_VALIDITY,
    issuing_ca_renew,
    root_crl_entries,
    root_crl_number_current,
    root_crl_number_next,
    root_crl_sign,
)
from mycert.custody.creation import ca_create, ca_import
from mycert.custody.deadlines import EXPIRY_WARNING, Deadline, ceremony_deadlines
from mycert.custody.errors import TEMPORARY_CODES, CustodyError, is_hsm_outage, is_temporary
from mycert.custody.files import (
    ROOT_OCSP_DIRECTORY,
    CaPaths,
    ca_paths,
    issuing_certificates,
    root_key_default_path,
    root_key_files_online,
    root_ocsp_path,
)
from mycert.custody.keys import (
    ISSUING_LABEL,
    MIN_PASSPHRASE_LENGTH,
    OCSP_LABEL,
    ROOT_LABEL,
    ROOT_ONLINE_MEANING,
    ca_passphrase,
    ca_token,
    ocsp_passphrase,
    root_file_passphrase,
    root_key_online,
    root_token_label,
    token_key_found,
    token_pin_refused,
    token_session_open,
    tokens_close,
    tokens_forget,
    uses_token,
    weak_passphrases,
    worker_signals_connect,
)
from mycert.custody.loading import (
    CaCertificates,
    LoadedCa,
    ca_certificates_load,
    ca_load,
    cache_clear,
    ocsp_responder_load,
    root_load,
)
from mycert.custody.probe import Probe, ca_probe
from mycert.custody.responder import (
    OCSP_RESPONDER_RENEW_BEFORE,
    OCSP_RESPONDER_VALIDITY_DAYS,
    OCSP_RESPONDER_WARNING,
    ocsp_responder_renew,
)

__all__ = [
    "EXPIRY_WARNING",
    "ISSUING_LABEL",
    "MIN_PASSPHRASE_LENGTH",
    "OCSP_LABEL",
    "OCSP_RESPONDER_RENEW_BEFORE",
    "OCSP_RESPONDER_VALIDITY_DAYS",
    "OCSP_RESPONDER_WARNING",
    "ROOT_CRL_VALIDITY",
    "ROOT_LABEL",
    "ROOT_OCSP_DIRECTORY",
    "ROOT_ONLINE_MEANING",
    "TEMPORARY_CODES",
    "CaCertificates",
    "CaPaths",
    "CustodyError",
    "Deadline",
    "LoadedCa",
    "Probe",
    "ca_certificates_load",
    "ca_create",
    "ca_import",
    "ca_issuers_url",
    "ca_load",
    "ca_passphrase",
    "ca_paths",
    "ca_probe",
    "ca_token",
    "cache_clear",
    "ceremony_deadlines",
    "crl_url",
    "is_hsm_outage",
    "is_temporary",
    "issuing_ca_renew",
    "issuing_certificates",
    "ocsp_passphrase",
    "ocsp_responder_load",
    "ocsp_responder_renew",
    "ocsp_url",
    "root_ca_url",
    "root_crl_entries",
    "root_crl_number_current",
    "root_crl_number_next",
    "root_crl_sign",
    "root_crl_url",
    "root_file_passphrase",
    "root_key_default_path",
    "root_key_files_online",
    "root_key_online",
    "root_load",
    "root_ocsp_path",
    "root_token_label",
    "token_key_found",
    "token_pin_refused",
    "token_session_open",
    "tokens_close",
    "tokens_forget",
    "uses_token",
    "weak_passphrases",
    "worker_signals_connect",
]

"""The delegated OCSP responder's certificate (RFC 6960 §4.2.2.2): issue and renew it.

It lives 30 days; beat renews it 10 days before its end (key files: a new key; a token:
the same key certified again, since keys are created at ceremonies only).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from cryptography import x509

from mycert.custody.files import (
    ca_paths,
    certificate_pem,
    file_read,
    private_file_write,
    public_file_replace,
    public_file_write,
)
from mycert.custody.keys import ocsp_passphrase, uses_token
from mycert.custody.loading import ca_load, cache_clear, ocsp_responder_load
from mycert.pki import (
    CertificateAuthority,
    DistinguishedName,
    KeyType,
    PrivateKey,
    create_ocsp_responder,
    encrypt_private_key_pem,
)

__all__ = [
    "OCSP_RESPONDER_RENEW_BEFORE",
    "OCSP_RESPONDER_VALIDITY_DAYS",
    "OCSP_RESPONDER_WARNING",
    "ocsp_responder_build",
    "ocsp_responder_renew",
]

OCSP_RESPONDER_VALIDITY_DAYS = 30

# Renew the responder certificate when less than this is left (automatic, by beat).
OCSP_RESPONDER_RENEW_BEFORE = timedelta(days=10)

# The responder certificate lives 30 days and beat renews it 10 days before its end, so
# a 30-day warning would always be on. Its warning means "automatic renewal is late":
# a day past the renewal point (beat tries every 6 hours).
OCSP_RESPONDER_WARNING = OCSP_RESPONDER_RENEW_BEFORE - timedelta(days=1)


def ocsp_responder_build(
    issuing: CertificateAuthority, *, now: datetime, key: PrivateKey | None = None
) -> CertificateAuthority:
    organization = issuing.certificate.subject.get_attributes_for_oid(
        x509.NameOID.ORGANIZATION_NAME
    )
    country = issuing.certificate.subject.get_attributes_for_oid(x509.NameOID.COUNTRY_NAME)
    org = str(organization[0].value) if organization else "MyCert"
    # EC P-256: an OCSP signature costs microseconds, which keeps the responder fast.
    return create_ocsp_responder(
        issuer=issuing,
        subject=DistinguishedName(
            common_name=f"{org} MyCert OCSP Responder",
            organization=org,
            country=str(country[0].value) if country else "LU",
        ),
        key_type=KeyType.EC_P256,
        now=now,
        validity_days=OCSP_RESPONDER_VALIDITY_DAYS,
        key=key,
    )


def ocsp_responder_renew(*, now: datetime, force: bool = False) -> bool:
    """Issue a fresh responder certificate when the current one nears its end.

    File backend: a new key, written with ``MYCERT_OCSP_KEY_PASSPHRASE``. Token backend:
    the same token key certified again (keys are created at ceremonies, not by beat).
    """
    paths = ca_paths()
    if not force:
        # The certificate alone says whether it is due (no key to open for that).
        current_certificate = x509.load_pem_x509_certificate(
            file_read(paths.ocsp_cert, "OCSP responder certificate")
        )
        if current_certificate.not_valid_after_utc - now > OCSP_RESPONDER_RENEW_BEFORE:
            return False
    issuing = ca_load().issuing
    if uses_token():
        current = ocsp_responder_load()
        responder = ocsp_responder_build(issuing, now=now, key=current.private_key)
        public_file_replace(paths.ocsp_cert, certificate_pem(responder.certificate))
        cache_clear()
        return True
    responder = ocsp_responder_build(issuing, now=now)
    passphrase = ocsp_passphrase()
    # Write beside, then rename: readers never see a key without its certificate.
    tmp_key = paths.ocsp_key.with_suffix(".new")
    tmp_cert = paths.ocsp_cert.with_suffix(".new")
    for tmp in (tmp_key, tmp_cert):
        tmp.unlink(missing_ok=True)
    private_file_write(tmp_key, encrypt_private_key_pem(responder.private_key, passphrase))
    public_file_write(tmp_cert, certificate_pem(responder.certificate))
    os.replace(tmp_key, paths.ocsp_key)
    os.replace(tmp_cert, paths.ocsp_cert)
    cache_clear()
    return True

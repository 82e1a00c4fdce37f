"""The addresses written into certificates (served by ``mycert.views.pki``).

CRL distribution points and AIA (RFC 5280 §4.2.1.13, §4.2.2.1), under
``MYCERT_PKI_BASE_URL``. Not a URLconf: ``config/urls.py`` routes them.
"""

from __future__ import annotations

from django.conf import settings

__all__ = ["ca_issuers_url", "crl_url", "ocsp_url", "root_ca_url", "root_crl_url"]


def crl_url() -> str:
    return f"{settings.MYCERT_PKI_BASE_URL}/pki/crl/issuing.crl"


def root_crl_url() -> str:
    return f"{settings.MYCERT_PKI_BASE_URL}/pki/crl/root.crl"


def ocsp_url() -> str:
    return f"{settings.MYCERT_PKI_BASE_URL}/pki/ocsp/"


def ca_issuers_url() -> str:
    return f"{settings.MYCERT_PKI_BASE_URL}/pki/ca/issuing.cer"


def root_ca_url() -> str:
    return f"{settings.MYCERT_PKI_BASE_URL}/pki/ca/root.cer"

"""Argument checks shared by the mycert.pki modules (private)."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlsplit

from cryptography import x509

__all__ = ["require_aware_utc", "require_ca", "require_http_url", "require_text"]


def require_aware_utc(value: object, name: str) -> datetime:
    """Return ``value`` converted to UTC; refuse naive datetimes."""
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is UTC:
        return value  # already UTC, as the database driver returns times: nothing to convert
    # A naive datetime is ambiguous: pyca would read it as UTC, the caller may have
    # meant local time. Certificate and CRL times are UTC (RFC 5280 §4.1.2.5).
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive {value!r}")
    return value.astimezone(UTC)


def require_text(value: object, name: str, *, max_length: int | None = None) -> str:
    """Return ``value`` if it is a non-blank string within ``max_length``."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{name} must not be empty")
    if value != value.strip():
        raise ValueError(f"{name} must not start or end with whitespace: {value!r}")
    if max_length is not None and len(value) > max_length:
        raise ValueError(f"{name} is {len(value)} characters long; the maximum is {max_length}")
    return value


def require_ca(certificate: x509.Certificate, *, usage: str) -> None:
    """Refuse a certificate that is not a CA allowed ``usage`` (key_cert_sign/crl_sign)."""
    # RFC 5280 §4.2.1.9: only cA=TRUE certificates may sign certificates; §4.2.1.3:
    # keyCertSign / cRLSign must be asserted for the matching signature.
    try:
        basic = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
        key_usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound as exc:
        raise ValueError(f"issuer certificate is not a CA: {exc}") from exc
    if not basic.ca:
        raise ValueError("issuer certificate is not a CA (BasicConstraints cA is FALSE)")
    if not getattr(key_usage, usage):
        raise ValueError(f"issuer certificate's KeyUsage does not assert {usage}")


def require_http_url(value: object, name: str) -> str:
    """Return ``value`` if it is an absolute http(s) URL usable in a certificate."""
    url = require_text(value, name)
    # URIs in GeneralName are IA5String (RFC 5280 §4.2.1.6): ASCII only, no spaces.
    if not url.isascii() or any(char.isspace() for char in url):
        raise ValueError(f"{name} must be an ASCII URL without spaces, got {url!r}")
    parts = urlsplit(url)
    # RFC 5280 §4.2.1.13 / §4.2.2.1 expect http: for CRLs, OCSP and caIssuers (https
    # would need revocation checking to fetch revocation data); https is tolerated
    # because the deployment may put the PKI base URL on the site's https address.
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError(f"{name} must be an absolute http:// URL, got {url!r}")
    return url

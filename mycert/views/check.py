"""The mutual-TLS self-check's page and JSON, behind the nginx of deploy/nginx/mycert-check.conf.

nginx asks for a client certificate and always overwrites ``X-MyCert-Client-Cert`` with
what it received (``$ssl_client_escaped_cert``, empty when none). The header is read only
when the TCP peer is one of ``MYCERT_CHECK_TRUSTED_PROXIES`` and the request was made to
the self-check's own host name (``MYCERT_CHECK_BASE_URL``'s): the main site's nginx runs
on a trusted address too, and whatever a client sends through it must not count (that
nginx clears the header as well: deploy/nginx/mycert-site.conf). Otherwise the header is
ignored, as if no certificate had been presented. Even then it is only a certificate, never
a verdict: :mod:`mycert.services.selfcheck` verifies it against MyCert's CAs and database.
"""

from __future__ import annotations

import ipaddress
import logging
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from mycert.models import Certificate
from mycert.ops.ratelimit import ratelimit
from mycert.services.selfcheck import (
    CheckResult,
    CheckStatus,
    certificate_from_header,
    check_certificate,
    selfcheck_record,
)

logger = logging.getLogger(__name__)

CLIENT_CERT_META = "HTTP_X_MYCERT_CLIENT_CERT"


def _from_trusted_proxy(request: HttpRequest) -> bool:
    try:
        peer = ipaddress.ip_address(str(request.META.get("REMOTE_ADDR", "")))
    except ValueError:
        return False
    return any(
        peer in ipaddress.ip_network(network.strip(), strict=False)
        for network in settings.MYCERT_CHECK_TRUSTED_PROXIES
        if network.strip()
    )


def _on_check_host(request: HttpRequest) -> bool:
    """Whether the request was made to the self-check's host (``MYCERT_CHECK_BASE_URL``).

    The host name must be the check's; a port, when the Host header carries one, must be
    the check's too (nginx's ``$host`` carries none; a web process reached directly on
    the same name, as ``make run`` does on 127.0.0.1:8000, does). Without the setting
    there is no self-check host, and no header is believed.
    """
    base = urlsplit(settings.MYCERT_CHECK_BASE_URL)
    if not base.hostname:
        return False
    try:
        host = request.get_host()  # checked against ALLOWED_HOSTS
    except DisallowedHost:
        return False
    # "name", "name:port", "[v6]" or "[v6]:port": urlsplit reads a Host header's form.
    asked = urlsplit(f"//{host}")
    try:
        asked_port, base_port = asked.port, base.port
    except ValueError:
        return False
    if asked.hostname != base.hostname:
        return False
    default_port = 443 if base.scheme == "https" else 80
    return asked_port is None or asked_port == (base_port or default_port)


def _check(request: HttpRequest) -> CheckResult:
    """Check the certificate the trusted proxy passed on, and audit the answer."""
    header = str(request.META.get(CLIENT_CERT_META, ""))
    if header and not _from_trusted_proxy(request):
        logger.warning("self-check: client certificate header ignored from an untrusted peer")
        header = ""
    elif header and not _on_check_host(request):
        logger.warning("self-check: client certificate header ignored on another host name")
        header = ""
    try:
        certificate = certificate_from_header(header)
    except ValueError:
        # nginx passes what its TLS stack accepted as a certificate: anything else did not
        # come from it. Nothing to verify, so nothing is believed.
        logger.warning("self-check: the client certificate header is not a certificate")
        result = CheckResult(CheckStatus.UNKNOWN_ISSUER)
    else:
        result = check_certificate(certificate=certificate, now=timezone.now())
    selfcheck_record(result=result)
    return result


@never_cache
@require_GET
@ratelimit("check", setting="MYCERT_RATELIMIT_CHECK")
def check_page(request: HttpRequest) -> HttpResponse:
    """Say in plain words whether the presented certificate works, and what to do if not."""
    result = _check(request)
    return render(
        request,
        "mycert/check.html",
        {
            "result": result,
            "status": result.status.value,
            "reason_label": (
                Certificate.RevocationReason(result.reason).label
                if result.reason in Certificate.RevocationReason.values
                else result.reason
            ),
            "mycert_base_url": settings.MYCERT_BASE_URL,
        },
    )


@never_cache
@require_GET
@ratelimit("check", setting="MYCERT_RATELIMIT_CHECK")
def check_status(request: HttpRequest) -> JsonResponse:
    """The same answer for programs: ``{"status": …, "serial": …, …}``."""
    return JsonResponse(_check(request).as_json())

"""Operations endpoints: ``/healthz`` for probes, ``/metrics`` for Prometheus."""

from __future__ import annotations

import hmac
import ipaddress

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mycert.ops.health import check_all
from mycert.ops.metrics import DATABASE_REGISTRY
from mycert.ops.ratelimit import client_ip


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Database, broker, CA, SMTP relay: 200 when all are ok, 503 otherwise. No secrets."""
    results = check_all()
    healthy = all(result.ok for result in results.values())
    return JsonResponse(
        {
            "status": "ok" if healthy else "error",
            "checks": {name: result.as_json() for name, result in results.items()},
        },
        status=200 if healthy else 503,
    )


def _scraper_allowed(request: HttpRequest) -> HttpResponse | None:
    """None when the scraper may read; otherwise the refusal to send."""
    allowed = [net.strip() for net in settings.MYCERT_METRICS_ALLOWED_IPS if net.strip()]
    if allowed:
        try:
            address = ipaddress.ip_address(client_ip(request))
        except ValueError:
            return HttpResponse("Forbidden\n", status=403, content_type="text/plain")
        if not any(address in ipaddress.ip_network(net, strict=False) for net in allowed):
            return HttpResponse("Forbidden\n", status=403, content_type="text/plain")
    token: str = settings.MYCERT_METRICS_TOKEN
    if token:
        given = str(request.META.get("HTTP_AUTHORIZATION", ""))
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            response = HttpResponse("Unauthorized\n", status=401, content_type="text/plain")
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    return None


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """The service's state for Prometheus (counts read from the database now)."""
    refusal = _scraper_allowed(request)
    if refusal is not None:
        return refusal
    return HttpResponse(generate_latest(DATABASE_REGISTRY), content_type=CONTENT_TYPE_LATEST)

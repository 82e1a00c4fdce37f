"""Values every page shows: the helpdesk contact, the self-check's address."""

from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django.urls import reverse


def service(request: HttpRequest) -> dict[str, Any]:  # noqa: ARG001 - Django passes it
    """Expose the helpdesk contact to templates."""
    return {
        "helpdesk_email": settings.MYCERT_HELPDESK_EMAIL,
        "helpdesk_phone": settings.MYCERT_HELPDESK_PHONE,
        # The mutual-TLS self-check's address, when deployed ("Mes certificats" links it).
        "check_url": f"{settings.MYCERT_CHECK_BASE_URL}/" if settings.MYCERT_CHECK_BASE_URL else "",
        # Absolute: the footer shows it on the self-check's own host too, which serves no
        # other MyCert page.
        "revoke_without_login_url": f"{settings.MYCERT_BASE_URL}{reverse('revoke-without-login')}",
    }

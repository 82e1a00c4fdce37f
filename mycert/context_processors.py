"""Values every page shows: the helpdesk contact."""

from typing import Any

from django.conf import settings
from django.http import HttpRequest


def service(request: HttpRequest) -> dict[str, Any]:
    """Expose the helpdesk contact to templates."""
    return {
        "helpdesk_email": settings.MYCERT_HELPDESK_EMAIL,
        "helpdesk_phone": settings.MYCERT_HELPDESK_PHONE,
    }

"""An absolute session lifetime, on top of Django's idle timeout.

``SESSION_SAVE_EVERY_REQUEST`` makes ``SESSION_COOKIE_AGE`` an idle timeout: a session
that keeps making requests (a tab left open on a polling page, a stolen cookie in use)
would never end. Every authenticated session gets its start time at the first request
that sees it; past ``MYCERT_SESSION_MAX_SECONDS`` it is flushed and the user must log
in again (OWASP ASVS 4.0 V3.3.2: an absolute timeout whatever the activity).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.conf import settings
from django.contrib.auth import logout
from django.http import HttpRequest, HttpResponse

__all__ = ["SESSION_STARTED_KEY", "SessionMaxAgeMiddleware"]

logger = logging.getLogger(__name__)

SESSION_STARTED_KEY = "mycert_session_started"


class SessionMaxAgeMiddleware:
    """Log out a session older than ``MYCERT_SESSION_MAX_SECONDS`` (0 turns it off)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        max_age: int = settings.MYCERT_SESSION_MAX_SECONDS
        user = getattr(request, "user", None)
        if max_age > 0 and user is not None and user.is_authenticated:
            now = int(time.time())
            started = request.session.get(SESSION_STARTED_KEY)
            if not isinstance(started, int):
                # login() cycles the key but keeps the data: a new login sets it anew
                # below, because logout() on expiry flushed the old value.
                request.session[SESSION_STARTED_KEY] = now
            elif now - started >= max_age:
                logger.info("session of user %s ended: older than %s s", user.pk, max_age)
                logout(request)  # flushes the session; the view sees an anonymous user
        return self.get_response(request)

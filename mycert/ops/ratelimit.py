"""Rate limits on login and on the request form, counted in Django's cache.

A fixed window per (scope, key): the first hit of a window creates the counter with the
window as its lifetime (``cache.add``), the next ones increment it (``cache.incr``), both
atomic in Redis and in the local-memory cache. Each request is counted against its client
address and, when logged in, against its user; either over the limit gets a 429 with the
plain-words problem page and a ``Retry-After``.

Chosen over django-ratelimit: thirty lines that read the proxy count this deployment
documents, answer with MyCert's own 429 page, and take time from one replaceable clock
(tests move it instead of sleeping).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.utils.translation import gettext_lazy as _

from mycert.problems import render_problem

__all__ = ["Rate", "client_ip", "hit", "parse_rate", "ratelimit"]

logger = logging.getLogger(__name__)

View = Callable[..., HttpResponse]

#: The clock; tests replace it to step over a window without sleeping.
now: Callable[[], float] = time.time


@dataclass(frozen=True)
class Rate:
    count: int
    seconds: int


def parse_rate(value: str) -> Rate:
    """Read ``"COUNT/SECONDS"`` (``"30/300"``: thirty hits in five minutes)."""
    try:
        count_text, seconds_text = value.split("/", 1)
        rate = Rate(int(count_text), int(seconds_text))
    except ValueError as exc:
        raise ValueError(f"A rate is COUNT/SECONDS, like 30/300; got {value!r}.") from exc
    if rate.count < 1 or rate.seconds < 1:
        raise ValueError(f"A rate needs a positive count and window; got {value!r}.")
    return rate


def client_ip(request: HttpRequest) -> str:
    """The client's address: the TCP peer, or the one the trusted proxies saw.

    With ``MYCERT_TRUSTED_PROXY_COUNT = n`` the n-th address from the right of
    X-Forwarded-For is the one the outermost trusted proxy received the request from;
    anything left of it was written by the client and is ignored.
    """
    remote = str(request.META.get("REMOTE_ADDR", ""))
    trusted: int = settings.MYCERT_TRUSTED_PROXY_COUNT
    if trusted <= 0:
        return remote
    forwarded = [
        part.strip()
        for part in str(request.META.get("HTTP_X_FORWARDED_FOR", "")).split(",")
        if part.strip()
    ]
    if not forwarded:
        return remote
    candidate = forwarded[-trusted] if len(forwarded) >= trusted else forwarded[0]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return remote


def _cache_key(scope: str, key: str, window: int) -> str:
    # Hashed: user ids and addresses never appear in the cache's key space as such.
    digest = hashlib.sha256(f"{scope}\0{key}".encode()).hexdigest()[:32]
    return f"mycert:rl:{scope}:{digest}:{window}"


def hit(scope: str, keys: Iterable[str], rate: Rate) -> int:
    """Count one hit for every key; return 0 if all are within ``rate``, else seconds to wait."""
    current = now()
    window = int(current // rate.seconds)
    retry_after = math.ceil((window + 1) * rate.seconds - current)
    over = False
    for key in keys:
        cache_key = _cache_key(scope, key, window)
        if cache.add(cache_key, 1, timeout=rate.seconds + 1):
            count = 1
        else:
            try:
                count = cache.incr(cache_key)
            except ValueError:  # expired between add and incr
                cache.add(cache_key, 1, timeout=rate.seconds + 1)
                count = 1
        over = over or count > rate.count
    return max(retry_after, 1) if over else 0


def _too_many(request: HttpRequest, retry_after: int) -> HttpResponse:
    response = render_problem(
        request,
        title=_("Too many attempts"),
        explanation=_("We received too many attempts from you in a short time."),
        what_to_do=_("Wait a few minutes, then try again."),
        status=429,
    )
    response["Retry-After"] = str(retry_after)
    return response


def ratelimit(scope: str, *, setting: str, methods: tuple[str, ...] = ()) -> Callable[[View], View]:
    """Limit a view to the rate named by ``setting`` per client address and per user.

    ``methods`` restricts counting to those HTTP methods (the form's POST only); empty
    counts every request.
    """

    def decorator(view: View) -> View:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if settings.MYCERT_RATELIMIT_ENABLED and (not methods or request.method in methods):
                keys = [f"ip:{client_ip(request)}"]
                if request.user.is_authenticated:
                    keys.append(f"user:{request.user.pk}")
                retry_after = hit(scope, keys, parse_rate(getattr(settings, setting)))
                if retry_after:
                    logger.warning(
                        "rate limit %s exceeded (user=%s)",
                        scope,
                        request.user.pk if request.user.is_authenticated else "-",
                    )
                    return _too_many(request, retry_after)
            return view(request, *args, **kwargs)

        return wrapper

    return decorator

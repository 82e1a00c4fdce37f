"""benchmarks/fig_web.py: the sessions it logs in can really submit the form.

The web figure's submissions (« Envoyer ») run on sessions written straight to the
database, as the OpenID callback leaves them. Since requests carry the login's signed ID
token (issue 20 §1), a session without one gets the form back with « Log out, then log
in again » (400): the figure then timed refusals, not submissions.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from benchmarks.fig_web import _sessions
from mycert.models import CertificateRequest

pytestmark = pytest.mark.django_db


def test_a_benchmark_session_submits_the_request_form(ca: Any) -> None:
    ((session_key, csrf),) = _sessions(1)
    client = Client(enforce_csrf_checks=True)
    client.cookies["sessionid"] = session_key
    client.cookies["csrftoken"] = csrf

    response = client.post(
        reverse("request-certificate"),
        {"csrfmiddlewaretoken": csrf, "vendor": "none", "terms_accepted": "on"},
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    assert CertificateRequest.objects.count() == 1

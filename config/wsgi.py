"""WSGI entry point (gunicorn ``config.wsgi``)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

django_application = get_wsgi_application()

# OCSP answers (stored bytes, one query) skip Django's request cycle: mycert.views.pki.
from mycert.views.pki import OcspFastPath  # noqa: E402 - needs the apps loaded above

application = OcspFastPath(django_application)

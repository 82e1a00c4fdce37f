"""The Celery application: JSON only, ids as arguments, tasks found in ``mycert``."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("mycert")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["mycert"])

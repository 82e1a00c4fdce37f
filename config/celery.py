"""The Celery application: JSON only, ids as arguments, tasks found in ``mycert``."""

import os
from typing import Any

from celery import Celery
from celery.signals import task_postrun, task_prerun, worker_process_shutdown, worker_shutdown

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("mycert")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["mycert"])


@task_prerun.connect
@task_postrun.connect
def _close_old_connections(task: Any = None, **kwargs: Any) -> None:
    """Treat a task like a request: drop broken or aged connections, keep the others.

    Replaces the fix-up's close-every-time (``CELERY_DB_REUSE_MAX``): a worker keeps
    its PostgreSQL connection for ``CONN_MAX_AGE`` seconds, health-checked before its
    first use in each task (``CONN_HEALTH_CHECKS``). An eager task runs inside the
    caller's transaction, whose connection must not be touched.
    """
    if task is not None and getattr(task.request, "is_eager", False):
        return
    from django.db import close_old_connections

    close_old_connections()


@worker_process_shutdown.connect
@worker_shutdown.connect
def _close_relay_connection(**kwargs: Any) -> None:
    """Say QUIT to the SMTP relay on the way out (connections are kept between tasks)."""
    from mycert.mail.transport import close_relay

    close_relay()

"""Celery tasks: thin, ids only; each loads by id and calls one service.

Every task's name is written in its decorator (``@shared_task(name=…)``) and the beat
schedule (``CELERY_BEAT_SCHEDULE``) uses exactly that string: moving a function never
renames a task that a broker may still hold. The names are kept as first published.
"""

from mycert.tasks.alerts import *  # noqa: F403
from mycert.tasks.audit import *  # noqa: F403
from mycert.tasks.delivery import *  # noqa: F403
from mycert.tasks.issuance import *  # noqa: F403
from mycert.tasks.notices import *  # noqa: F403
from mycert.tasks.publication import *  # noqa: F403

"""Celery tasks: thin, ids only; each loads by id and calls one service."""

from mycert.tasks.alerts import *  # noqa: F403
from mycert.tasks.audit import *  # noqa: F403
from mycert.tasks.delivery import *  # noqa: F403
from mycert.tasks.issuance import *  # noqa: F403
from mycert.tasks.notices import *  # noqa: F403
from mycert.tasks.publication import *  # noqa: F403

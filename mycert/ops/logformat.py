"""``MYCERT_LOG_FORMAT=json``: one JSON object a line, for log shippers.

A record carries the time, level, logger and message, the ids a call passes with
``extra=`` (only the names in :data:`ID_FIELDS`: nothing else from ``extra`` is copied,
so a careless ``extra`` cannot leak a secret), and the Celery task it ran in. Exceptions
are written as their type and traceback; messages themselves name primary keys only (the
STYLE rule: never an e-mail address, a password or a body).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

__all__ = ["ID_FIELDS", "JsonFormatter"]

#: Names a log call may pass with ``extra=`` to be written as fields.
ID_FIELDS = ("request_id", "certificate_id", "delivery_id", "user_id")


class JsonFormatter(logging.Formatter):
    """Format a record as compact JSON with the ids it names."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ID_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                data[name] = value
        task = _current_task()
        if task is not None:
            data["task"], data["task_id"] = task
        if record.exc_info:
            data["exception"] = record.exc_info[0].__name__ if record.exc_info[0] else ""
            data["traceback"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str)


def _current_task() -> tuple[str, str] | None:
    try:
        from celery import current_task
    except ImportError:  # pragma: no cover - celery is a dependency
        return None
    request = getattr(current_task, "request", None)
    task_id = getattr(request, "id", None)
    if not task_id:
        return None
    return str(current_task.name), str(task_id)

"""One request at a time in the live server when it shares an in-memory SQLite connection.

With the embedded defaults the test database is SQLite in memory, and Django hands that
one connection to every request thread of the live server (``connections_override``).
Two requests at once then share a connection that is not safe to share: a browser that
loads a page and ``/favicon.ico`` together, both reading the session, deadlocked in
SQLite (one thread inside ``sqlite3_step`` calling back into Python for a date function,
the other waiting for SQLite's mutex while holding the GIL). Requests are serialised
around the application only, not per connection, so browsers' keep-alive connections
still work. On PostgreSQL each thread has its own connection and nothing changes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from django.core.servers.basehttp import ThreadedWSGIServer
from django.test.testcases import LiveServerThread

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication

__all__ = ["install"]


class _SharedConnectionSafeServer(ThreadedWSGIServer):
    _one_request = threading.Lock()

    def set_app(self, application: WSGIApplication | None) -> None:
        if application is None or not self.connections_override:
            super().set_app(application)
            return

        def one_at_a_time(
            environ: dict[str, Any], start_response: StartResponse
        ) -> Iterable[bytes]:
            with self._one_request:
                return application(environ, start_response)

        super().set_app(one_at_a_time)


def install() -> None:
    """Make every live server (pytest-django's ``live_server``) use the safe server."""
    LiveServerThread.server_class = _SharedConnectionSafeServer

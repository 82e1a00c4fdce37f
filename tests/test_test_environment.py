"""The test environment itself (tests/testenv.py): tests send no mail anywhere real."""

from __future__ import annotations

import os
import socket
from typing import Any

import pytest
from django.conf import settings

from mycert.management.commands.demo import Command as Demo


def test_tests_without_an_smtp_server_send_mail_to_a_refusing_port_of_their_own() -> None:
    """Not to the demo's sink: a test run beside ``make run`` would fill its mailbox, and
    a test would pass or fail according to whether that port is open (issue 23, point 2)."""
    demo_sink = Demo().create_parser("manage.py", "demo").parse_args([]).smtp_port
    assert demo_sink != settings.EMAIL_PORT
    assert settings.EMAIL_HOST == "127.0.0.1"
    # The port is held by this process (bound, not listening): refused, and no other
    # process can start listening on it while the tests run.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((settings.EMAIL_HOST, settings.EMAIL_PORT), timeout=2).close()
    with socket.socket() as other, pytest.raises(OSError):
        other.bind((settings.EMAIL_HOST, settings.EMAIL_PORT))


def test_tests_reach_no_openid_provider_but_their_own(settings: Any) -> None:
    """Not ``make run``'s demo provider on its fixed port either.

    Each test is pointed at the tests' own signing provider (``tests/support/id_tokens``);
    underneath, the environment's issuer is a refusing port the test process holds.
    """
    from urllib.parse import urlsplit

    from tests.support.id_tokens import signing_provider

    assert signing_provider().issuer == settings.OIDC_ISSUER
    issuer = urlsplit(os.environ["OIDC_ISSUER"])
    demo_provider = Demo().create_parser("manage.py", "demo").parse_args([]).oidc_port
    assert issuer.port != demo_provider
    assert issuer.hostname == "127.0.0.1"
    assert issuer.port is not None
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((issuer.hostname, issuer.port), timeout=2).close()

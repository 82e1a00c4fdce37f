"""``manage.py demo_mail``: the README's way to read the demo's mailbox and save the .p12."""

from __future__ import annotations

import mailbox
from datetime import UTC, datetime
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from mycert.mail.messages import (
    CertificateFacts,
    Envelope,
    keystore_filename,
    keystore_message,
    password_message,
)

FACTS = CertificateFacts(
    serial="0a1b2c3d4e5f60718293a4b5c6d7e8f901234567",
    professional_name="Anne Muller",
    professional_id="LU-MED-100234",
    not_after=datetime(2029, 12, 4, tzinfo=UTC),
)
KEYSTORE = b"0\x82\x01\x00 not a real keystore"
PASSWORD = "Abcd-Efgh-Jkmn-Pqrs-Tuvw-Xyz2"


def _maildir(path: Path) -> Path:
    box = mailbox.Maildir(path, create=True)
    envelope = Envelope(to="anne.muller@cabinet-muller.lu", message_id="<k@esante.lu>")
    box.add(
        keystore_message(envelope=envelope, facts=FACTS, keystore=KEYSTORE).message().as_bytes()
    )
    box.add(
        password_message(envelope=envelope, facts=FACTS, password=PASSWORD).message().as_bytes()
    )
    return path


def test_saves_the_keystore_and_shows_the_password(tmp_path: Path) -> None:
    maildir = _maildir(tmp_path / "mail")
    out = StringIO()

    call_command(
        "demo_mail",
        "--maildir",
        str(maildir),
        "--body",
        "--save-keystore",
        str(tmp_path / "keystores"),
        stdout=out,
    )

    saved = tmp_path / "keystores" / "mycert-0a1b2c3d4e5f6071.p12"
    assert saved.read_bytes() == KEYSTORE
    assert saved.stat().st_mode & 0o777 == 0o600
    assert PASSWORD in out.getvalue()
    assert f"saved {saved}" in out.getvalue()


def test_no_mailbox_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="No Maildir"):
        call_command("demo_mail", "--maildir", str(tmp_path / "none"), stdout=StringIO())


# --- The README's step 4, as typed in another terminal (issue 23, points 1 and 3) ----------

BASE_DIR = Path(__file__).resolve().parents[1]
KEYSTORE_PASSWORD = "Demo-Pass-Word-2026"


def _real_keystore(common_name: str) -> bytes:
    """A real PKCS#12 (self-signed, EC) that openssl opens with ``KEYSTORE_PASSWORD``."""
    from datetime import timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import pkcs12
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return pkcs12.serialize_key_and_certificates(
        None,
        key,
        certificate,
        None,
        serialization.BestAvailableEncryption(KEYSTORE_PASSWORD.encode()),
    )


def _readme_step(number: int) -> list[str]:
    """The shell lines of the README's demo step ``number`` (its ```sh block)."""
    import re

    readme = (BASE_DIR / "README.md").read_text()
    step = re.search(rf"^{number}\. .*?```sh\n(.*?)```", readme, re.M | re.S)
    assert step, f"README step {number} has a shell block"
    return [line.strip() for line in step.group(1).splitlines() if line.strip()]


def test_the_readme_step_4_commands_work_as_typed_in_another_terminal(tmp_path: Path) -> None:
    """No DJANGO_* in that terminal (``make run`` set DJANGO_DEBUG for itself only), and two
    keystores in the mailbox, where a ``mycert-*.p12`` glob gives openssl two files."""
    import os
    import shutil
    import subprocess

    var = tmp_path / "var"
    var.mkdir()
    box = mailbox.Maildir(var / "mail", create=True)
    for serial, holder in (("0a" * 20, "Older"), ("0d48" * 10, "Newest")):
        facts = CertificateFacts(
            serial=serial,
            professional_name=holder,
            professional_id="LU-MED-100234",
            not_after=datetime(2029, 12, 4, tzinfo=UTC),
        )
        envelope = Envelope(to="anne.muller@cabinet-muller.lu", message_id=f"<{serial}@x>")
        message = keystore_message(
            envelope=envelope, facts=facts, keystore=_real_keystore(holder)
        ).message()
        box.add(message.as_bytes())
    terminal = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    terminal["MYCERT_VAR_DIR"] = str(var)  # this test's var/, in place of the checkout's

    outputs = []
    for line in _readme_step(4):
        command = line.split("#")[0].strip().replace("var/", f"{var}/")
        if command.startswith("openssl pkcs12"):
            if shutil.which("openssl") is None:
                pytest.skip("openssl is not installed")
            command += f" -passin pass:{KEYSTORE_PASSWORD}"  # it would ask on the terminal
        done = subprocess.run(  # noqa: S602 - the README's own command lines
            command, shell=True, cwd=BASE_DIR, env=terminal, capture_output=True, text=True
        )
        assert done.returncode == 0, f"{line!r} failed:\n{done.stdout}\n{done.stderr}"
        outputs.append(done.stdout + done.stderr)

    assert "Shrouded Keybag" in outputs[-1]  # openssl opened one keystore: the newest
    latest = (var / "keystores" / "latest.p12").resolve()
    assert latest.name == keystore_filename("0d48" * 10)


def test_the_readme_step_3_names_the_states_the_page_shows() -> None:
    """Issue 23, point 11: the states named are the French labels of « Mes certificats »."""
    import re

    from django.utils.translation import override

    from mycert.selectors import STATE_LABELS

    readme = (BASE_DIR / "README.md").read_text()
    step = re.search(r"^3\. (.*?)^4\. ", readme, re.M | re.S)
    assert step
    named = [" ".join(n.split()) for n in re.findall(r"« ([^»]+?) »", step.group(1))]
    with override("fr"):
        shown = {str(label) for label in STATE_LABELS.values()}
    states = [n for n in named if n != "Mes certificats"]
    assert len(states) >= 2, named
    assert set(states) <= shown, set(states) - shown


def test_the_demo_banner_names_the_buttons_as_the_page_does() -> None:
    """Issue 23, point 11: the start banner's labels are the page's, in French and English;
    its curl for the self-check trusts the demo's server certificate instead of -k."""
    from django.utils.translation import gettext, override

    from mycert.management.commands.demo import Command as Demo

    out = StringIO()
    demo = Demo(stdout=out)
    demo._banner(
        {"port": 8000, "check_url": "https://127.0.0.1:8443", "check_ca": "/v/server.crt"},
        Path("/v/mail"),
    )
    banner = out.getvalue()
    for language in ("fr", "en"):
        with override(language):
            assert gettext("Log in with LuxTrust") in banner
    assert "curl --cacert /v/server.crt" in banner
    assert "curl -k" not in banner

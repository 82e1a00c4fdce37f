"""The helpdesk admin over HTTP: lists, search, filters, PEM, revocation, retry, no delete.

Real CA, real CRL task (Celery eager), real gpg for vendor keys; no mocks.
"""

from __future__ import annotations

import base64
import contextlib
import html
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any, cast

import pytest
from cryptography import x509
from django.contrib.auth.models import Group, Permission, User
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from mycert.models import (
    AuditEvent,
    Certificate,
    CertificateRequest,
    Crl,
    Delivery,
    OperatorAlert,
    Professional,
    Vendor,
)
from mycert.sealing import unseal
from mycert.services.issuance import request_issue
from tests import factories
from tests.support.gpg import GpgKey

pytestmark = pytest.mark.django_db

CHANGELISTS = [
    "mycert_certificaterequest",
    "mycert_certificate",
    "mycert_delivery",
    "mycert_vendor",
    "mycert_professional",
    "mycert_auditevent",
    "mycert_crl",
]


# --- Fixtures --------------------------------------------------------------------------------


def _request(**fields: Any) -> CertificateRequest:
    return cast(CertificateRequest, factories.CertificateRequestFactory(**fields))


def _professional(**fields: Any) -> Professional:
    return cast(Professional, factories.ProfessionalFactory(**fields))


def _vendor(**fields: Any) -> Vendor:
    return cast(Vendor, factories.VendorFactory(**fields))


def _staff(username: str, *, group: str | None = None, perms: tuple[str, ...] = ()) -> User:
    user = User.objects.create_user(username, password=None, is_staff=True)
    if group:
        user.groups.add(Group.objects.get(name=group))
    for codename in perms:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return user


def _client_for(user: User) -> Client:
    client = Client(HTTP_ACCEPT_LANGUAGE="en")
    client.force_login(user)
    return client


@pytest.fixture
def agent() -> User:
    return _staff("agent", group="Helpdesk")


@pytest.fixture
def helpdesk(agent: User) -> Client:
    """A helpdesk agent: staff, in the migration's ``Helpdesk`` group, not superuser."""
    return _client_for(agent)


@pytest.fixture
def eager(eager_tasks: None) -> None:
    """Run the CRL task in-process (the Celery app's own setting, whatever ran before)."""


@pytest.fixture
def issue(ca: Any) -> Callable[..., Certificate]:
    """Issue a real certificate through the issuance service."""

    def make(**request_fields: Any) -> Certificate:
        request = _request(**request_fields)
        outcome = request_issue(request_id=request.pk, now=timezone.now())
        assert outcome.certificate_id is not None
        return Certificate.objects.get(pk=outcome.certificate_id)

    return make


@pytest.fixture
def certificate(issue: Callable[..., Certificate]) -> Certificate:
    return issue()


def _url(name: str, *args: Any) -> str:
    return reverse(f"admin:{name}", args=args)


def _messages(response: Any) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def _revoke_action(client: Client, certificates: list[Certificate], **form: Any) -> Any:
    data: dict[str, Any] = {
        "action": "revoke_selected",
        "_selected_action": [c.pk for c in certificates],
        **form,
    }
    return client.post(_url("mycert_certificate_changelist"), data)


def _changelist_ids(response: Any) -> set[int]:
    return {obj.pk for obj in response.context["cl"].result_list}


# --- Lists, search, filters ------------------------------------------------------------------


def test_helpdesk_sees_every_list(helpdesk: Client, certificate: Certificate) -> None:
    for name in CHANGELISTS:
        response = helpdesk.get(_url(f"{name}_changelist"))
        assert response.status_code == 200, name
    assert helpdesk.get(_url("mycert_certificate_change", certificate.pk)).status_code == 200
    assert helpdesk.get(_url("index")).status_code == 200


def test_index_shows_the_number_of_overdue_requests(helpdesk: Client) -> None:
    _request(due_at=timezone.now() - timedelta(hours=1))
    _request(due_at=timezone.now() - timedelta(days=2))
    _request()  # not yet due
    _request(due_at=timezone.now() - timedelta(days=1), status=CertificateRequest.Status.SENT)

    response = helpdesk.get(_url("index"))

    assert response.status_code == 200
    assert response.context["overdue_request_count"]() == 2
    page = response.content.decode()
    assert "2 requests are overdue" in page
    assert _url("mycert_certificaterequest_changelist") + "?overdue=yes" in page


def test_search_certificates_by_serial_name_and_professional_id(
    helpdesk: Client, issue: Callable[..., Certificate]
) -> None:
    first = issue(professional=_professional(family_name="Weber"))
    second = issue()
    changelist = _url("mycert_certificate_changelist")

    by_serial = helpdesk.get(changelist, {"q": first.serial})
    as_openssl_prints_it = ":".join(
        first.serial.zfill(len(first.serial) + len(first.serial) % 2)[i : i + 2]
        for i in range(0, len(first.serial) + len(first.serial) % 2, 2)
    ).upper()
    by_colon_serial = helpdesk.get(changelist, {"q": as_openssl_prints_it})
    by_name = helpdesk.get(changelist, {"q": "weber"})
    by_id = helpdesk.get(changelist, {"q": second.professional.professional_id})

    assert _changelist_ids(by_serial) == {first.pk}
    assert _changelist_ids(by_colon_serial) == {first.pk}
    assert _changelist_ids(by_name) == {first.pk}
    assert _changelist_ids(by_id) == {second.pk}


@pytest.mark.parametrize(
    "spelling",
    [
        pytest.param(lambda n: f"{n:040X}", id="openssl x509 -serial (upper case, leading zero)"),
        pytest.param(lambda n: f"{n:040x}", id="lower case, leading zero"),
        pytest.param(
            lambda n: ":".join(f"{n:040x}"[i : i + 2] for i in range(0, 40, 2)),
            id="colons (openssl -text)",
        ),
        pytest.param(
            lambda n: " ".join(f"{n:040X}"[i : i + 2] for i in range(0, 40, 2)),
            id="spaces",
        ),
        pytest.param(lambda n: f"0x{n:x}", id="0x"),
        pytest.param(lambda n: f"{n:x}".upper(), id="upper case, no leading zero"),
        pytest.param(lambda n: str(n), id="decimal"),
        pytest.param(lambda n: f"  {n:040X}\n", id="pasted with blanks"),
        pytest.param(lambda n: f"{n:040x}"[:16], id="its first 16 digits as openssl prints them"),
        pytest.param(lambda n: f"serial={n:040X}", id="openssl x509 -serial's whole line"),
        pytest.param(lambda n: f"Serial Number: {n:#x}", id="a tool's label before it"),
    ],
)
def test_search_a_serial_in_every_common_spelling(
    helpdesk: Client, issue: Callable[..., Certificate], spelling: Callable[[int], str]
) -> None:
    first, second = issue(), issue()
    # A serial whose hex has an odd number of digits: tools print it with a leading zero.
    odd = "cae1cb3" + first.serial[-32:]
    Certificate.objects.filter(pk=first.pk).update(serial=odd)

    response = helpdesk.get(_url("mycert_certificate_changelist"), {"q": spelling(int(odd, 16))})

    assert response.status_code == 200
    assert _changelist_ids(response) == {first.pk}
    assert second.pk not in _changelist_ids(response)


def test_certificate_page_shows_the_subject_with_readable_names(
    helpdesk: Client, certificate: Certificate
) -> None:
    page = helpdesk.get(_url("mycert_certificate_change", certificate.pk)).content.decode()
    professional = certificate.professional

    assert "2.5.4." not in page
    expected = (
        f"serialNumber={professional.professional_id}, surname={professional.family_name}, "
        f"givenName={professional.given_name}, CN={professional.full_name}, O="
    )
    assert expected in html.unescape(page)
    assert "C=LU" in page


def test_request_states_agree_with_la_demande_in_french(helpdesk: Client) -> None:
    """« envoyée », like the professional's pages, in the list and in its filter."""
    _request(status=CertificateRequest.Status.SENT)
    french = helpdesk.get(_url("mycert_certificaterequest_changelist"), HTTP_ACCEPT_LANGUAGE="fr")
    page = html.unescape(french.content.decode())
    filter_panel = page[page.index('id="changelist-filter"') :]
    for label in ("soumise", "envoyée", "échouée"):
        assert label in filter_panel, label
    assert not re.search(r"\benvoyé\b", page)
    assert not re.search(r">échec<", page)
    row = page[page.index('id="result_list"') :]
    assert "envoyée" in row


def test_search_requests_and_professionals(helpdesk: Client) -> None:
    request = _request(
        professional=_professional(family_name="Schmit", email="dr.schmit@example.lu")
    )
    _request()

    by_email = helpdesk.get(
        _url("mycert_certificaterequest_changelist"), {"q": "dr.schmit@example.lu"}
    )
    by_id = helpdesk.get(
        _url("mycert_professional_changelist"), {"q": request.professional.professional_id}
    )

    assert _changelist_ids(by_email) == {request.pk}
    assert _changelist_ids(by_id) == {request.professional.pk}


def test_filter_overdue_requests_shows_due_date(helpdesk: Client) -> None:
    late = _request(due_at=timezone.now() - timedelta(hours=3))
    _request()

    response = helpdesk.get(_url("mycert_certificaterequest_changelist"), {"overdue": "yes"})

    assert response.status_code == 200
    assert _changelist_ids(response) == {late.pk}
    assert "column-due_at" in response.content.decode()


def test_filter_certificates_expiring_soon(
    helpdesk: Client, issue: Callable[..., Certificate]
) -> None:
    soon = issue()
    later = issue()
    Certificate.objects.filter(pk=soon.pk).update(not_after=timezone.now() + timedelta(days=20))
    changelist = _url("mycert_certificate_changelist")

    within_7 = helpdesk.get(changelist, {"expiring": "7"})
    within_30 = helpdesk.get(changelist, {"expiring": "30"})
    all_of_them = helpdesk.get(changelist)

    assert _changelist_ids(within_7) == set()
    assert _changelist_ids(within_30) == {soon.pk}
    assert _changelist_ids(all_of_them) == {soon.pk, later.pk}


def test_filter_certificates_by_state_and_vendor(
    helpdesk: Client, issue: Callable[..., Certificate], agent: User
) -> None:
    vendor = _vendor()
    with_vendor = issue(vendor=vendor, vendor_copy_consent=True)
    revoked = issue()
    Certificate.objects.filter(pk=revoked.pk).update(
        revoked_at=timezone.now(), revocation_reason="superseded"
    )
    changelist = _url("mycert_certificate_changelist")

    assert _changelist_ids(helpdesk.get(changelist, {"state": "revoked"})) == {revoked.pk}
    assert _changelist_ids(helpdesk.get(changelist, {"state": "valid"})) == {with_vendor.pk}
    assert _changelist_ids(helpdesk.get(changelist, {"request__vendor__id__exact": vendor.pk})) == {
        with_vendor.pk
    }


# --- PEM -------------------------------------------------------------------------------------


def test_download_pem(helpdesk: Client, certificate: Certificate) -> None:
    response = helpdesk.get(_url("mycert_certificate_pem", certificate.pk))

    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-pem-file"
    assert response["Content-Disposition"] == f'attachment; filename="{certificate.serial}.pem"'
    parsed = x509.load_pem_x509_certificate(response.content)
    assert parsed.serial_number == int(certificate.serial, 16)


def test_pem_needs_view_permission(certificate: Certificate) -> None:
    nobody = _client_for(_staff("nobody"))

    assert nobody.get(_url("mycert_certificate_pem", certificate.pk)).status_code == 403


# --- Revocation ------------------------------------------------------------------------------


def _crl_entry(serial: str) -> x509.RevokedCertificate | None:
    crl = x509.load_der_x509_crl(bytes(Crl.objects.latest().der))
    return crl.get_revoked_certificate_by_serial_number(int(serial, 16))


def test_bulk_revocation_in_two_steps(
    helpdesk: Client,
    agent: User,
    issue: Callable[..., Certificate],
    eager: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    first, second = issue(), issue()

    confirmation = _revoke_action(helpdesk, [first, second])

    assert confirmation.status_code == 200
    assert "admin/mycert/certificate/revoke_confirmation.html" in [
        t.name for t in confirmation.templates
    ]
    page = confirmation.content.decode()
    assert 'name="reason"' in page
    assert first.serial in page
    assert second.serial in page
    assert not Certificate.objects.revoked().exists()

    with django_capture_on_commit_callbacks(execute=True):
        done = _revoke_action(
            helpdesk,
            [first, second],
            post="yes",
            reason="keyCompromise",
            # As a browser's datetime-local input sends it.
            compromised_at=(timezone.localtime() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M"),
            comment="Laptop stolen, ticket 4711",
        )

    assert done.status_code == 302
    assert any("Revoked 2 certificates" in m for m in _messages(done))
    for certificate in (first, second):
        certificate.refresh_from_db()
        assert certificate.revoked_at is not None
        assert certificate.revocation_reason == "keyCompromise"
        assert certificate.revocation_comment == "Laptop stolen, ticket 4711"
        assert certificate.revoked_by == agent
        assert certificate.revoked_via == Certificate.RevokedVia.HELPDESK
        assert certificate.compromised_at is not None
        event = AuditEvent.objects.get(action="certificate.revoked", object_id=str(certificate.pk))
        assert event.actor == f"user:{agent.pk}"
        assert event.details["reason"] == "keyCompromise"
        entry = _crl_entry(certificate.serial)
        assert entry is not None
        reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        assert reason == x509.ReasonFlags.key_compromise


def test_a_bulk_revocation_above_the_limit_needs_a_superuser(
    helpdesk: Client,
    issue: Callable[..., Certificate],
    settings: Any,
    eager: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    """One agent's "select all" cannot revoke the population (issue 22)."""
    settings.MYCERT_BULK_REVOCATION_MAX = 2
    certificates = [issue(), issue(), issue()]

    for step in ({}, {"post": "yes", "reason": "unspecified", "comment": "Ticket 4712"}):
        refused = _revoke_action(helpdesk, certificates, **step)
        assert refused.status_code == 302
        message = _messages(refused)[-1]
        assert "You selected 3 certificates to revoke" in message
        assert "above 2 at once, a bulk revocation needs a superuser" in message
    assert not Certificate.objects.revoked().exists()
    # Up to the limit, the agent may.
    page = _revoke_action(helpdesk, certificates[:2]).content.decode()
    assert "2 certificates will be revoked." in page

    admin = User.objects.create_superuser("chief", password=None)
    chief = _client_for(admin)
    page = _revoke_action(chief, certificates).content.decode()
    assert "3 certificates will be revoked." in page
    assert "This is more than 2: only a superuser may revoke so many at once." in page
    with django_capture_on_commit_callbacks(execute=True):
        done = _revoke_action(
            chief, certificates, post="yes", reason="unspecified", comment="Ticket 4712"
        )
    assert any("Revoked 3 certificates" in m for m in _messages(done))
    assert Certificate.objects.revoked().count() == 3


def test_revoke_button_on_the_change_page(
    helpdesk: Client,
    agent: User,
    certificate: Certificate,
    eager: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    revoke_url = _url("mycert_certificate_revoke", certificate.pk)

    change_page = helpdesk.get(_url("mycert_certificate_change", certificate.pk))
    assert revoke_url in change_page.content.decode()
    confirmation = helpdesk.get(revoke_url)
    assert confirmation.status_code == 200
    assert 'name="reason"' in confirmation.content.decode()

    with django_capture_on_commit_callbacks(execute=True):
        done = helpdesk.post(revoke_url, {"reason": "affiliationChanged", "comment": "Left"})

    assert done.status_code == 302
    assert done["Location"] == _url("mycert_certificate_change", certificate.pk)
    certificate.refresh_from_db()
    assert certificate.revocation_reason == "affiliationChanged"
    assert certificate.revoked_by == agent
    assert certificate.compromised_at is None
    entry = _crl_entry(certificate.serial)
    assert entry is not None
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason == x509.ReasonFlags.affiliation_changed
    # Revoked: the button is gone.
    change_page = helpdesk.get(_url("mycert_certificate_change", certificate.pk))
    assert revoke_url not in change_page.content.decode()


def test_already_revoked_is_refused(helpdesk: Client, certificate: Certificate) -> None:
    revoked_at = timezone.now() - timedelta(days=3)
    Certificate.objects.filter(pk=certificate.pk).update(
        revoked_at=revoked_at, revocation_reason="superseded"
    )

    by_action = _revoke_action(helpdesk, [certificate], post="yes", reason="keyCompromise")
    by_button = helpdesk.post(
        _url("mycert_certificate_revoke", certificate.pk), {"reason": "keyCompromise"}
    )

    for response in (by_action, by_button):
        assert response.status_code == 302
        assert any("already revoked" in m for m in _messages(response))
    certificate.refresh_from_db()
    assert certificate.revoked_at == revoked_at
    assert certificate.revocation_reason == "superseded"
    assert not AuditEvent.objects.filter(action="certificate.revoked").exists()


def test_a_mixed_selection_skips_the_revoked_ones(
    helpdesk: Client, issue: Callable[..., Certificate]
) -> None:
    old, fresh = issue(), issue()
    Certificate.objects.filter(pk=old.pk).update(
        revoked_at=timezone.now(), revocation_reason="superseded"
    )

    confirmation = _revoke_action(helpdesk, [old, fresh])
    assert "already-revoked" in confirmation.content.decode()
    done = _revoke_action(
        helpdesk,
        [old, fresh],
        post="yes",
        reason="cessationOfOperation",
        comment="Retraite, courrier du 2 décembre",
    )

    texts = _messages(done)
    assert any("Revoked 1 certificate" in m for m in texts)
    assert any("1 certificate was already revoked" in m for m in texts)
    old.refresh_from_db()
    fresh.refresh_from_db()
    assert old.revocation_reason == "superseded"
    assert fresh.revocation_reason == "cessationOfOperation"


@pytest.mark.parametrize(
    ("reason", "compromised_at", "error"),
    [
        ("keyCompromise", timedelta(days=2), "cannot be in the future"),
        ("superseded", -timedelta(days=2), "applies only to the reason"),
        ("certificateHold", None, "Select a valid choice"),
        ("", None, "Choose the reason"),
    ],
)
def test_invalid_revocation_form_changes_nothing(
    helpdesk: Client,
    certificate: Certificate,
    reason: str,
    compromised_at: timedelta | None,
    error: str,
) -> None:
    form = {"post": "yes", "reason": reason, "comment": "ticket 4711"}
    if compromised_at is not None:
        form["compromised_at"] = (timezone.localtime() + compromised_at).strftime("%Y-%m-%d %H:%M")

    response = _revoke_action(helpdesk, [certificate], **form)

    assert response.status_code == 200
    assert error in response.content.decode()
    assert response.context["form"].errors
    certificate.refresh_from_db()
    assert certificate.revoked_at is None
    assert not AuditEvent.objects.filter(action="certificate.revoked").exists()


def test_the_agent_chooses_the_reason_and_says_on_whose_request(
    helpdesk: Client, certificate: Certificate
) -> None:
    """No reason is chosen in advance, and a revocation without a comment is refused."""
    revoke_url = _url("mycert_certificate_revoke", certificate.pk)
    form = helpdesk.get(revoke_url).context["form"]
    assert form["reason"].value() in (None, "")
    page = helpdesk.get(revoke_url).content.decode()
    assert re.search(r'<option value="" selected>', page)
    assert re.search(r'<textarea[^>]*name="comment"[^>]*required', page)

    no_comment = helpdesk.post(revoke_url, {"reason": "keyCompromise", "comment": "  "})

    assert no_comment.status_code == 200
    assert "Say why, and on whose request" in no_comment.content.decode()
    certificate.refresh_from_db()
    assert certificate.revoked_at is None


def test_staff_without_revoke_permission_cannot_revoke(certificate: Certificate) -> None:
    viewer = _client_for(_staff("viewer", perms=("view_certificate",)))

    changelist = viewer.get(_url("mycert_certificate_changelist"))
    change_page = viewer.get(_url("mycert_certificate_change", certificate.pk))
    forced = _revoke_action(viewer, [certificate], post="yes", reason="keyCompromise")
    button = viewer.post(
        _url("mycert_certificate_revoke", certificate.pk), {"reason": "keyCompromise"}
    )

    assert changelist.status_code == 200
    assert "revoke_selected" not in changelist.content.decode()
    assert _url("mycert_certificate_revoke", certificate.pk) not in change_page.content.decode()
    assert forced.status_code in (200, 302)
    assert button.status_code == 403
    certificate.refresh_from_db()
    assert certificate.revoked_at is None


# --- Nothing deleted, nothing beyond the group ------------------------------------------------


def test_nothing_can_be_deleted(helpdesk: Client, certificate: Certificate) -> None:
    delivery = Delivery.objects.filter(certificate=certificate).first()
    assert delivery is not None
    vendor = _vendor()
    objects = {
        "mycert_certificate": certificate.pk,
        "mycert_certificaterequest": certificate.request_id,
        "mycert_delivery": delivery.pk,
        "mycert_vendor": vendor.pk,
        "mycert_professional": certificate.professional_id,
        "mycert_auditevent": AuditEvent.objects.first().pk,  # type: ignore[union-attr]
    }
    superuser = _client_for(
        User.objects.create_superuser("root", email="root@example.lu", password=None)
    )

    for client in (helpdesk, superuser):
        for name, pk in objects.items():
            assert client.get(_url(f"{name}_delete", pk)).status_code == 403, name
            assert client.post(_url(f"{name}_delete", pk), {"post": "yes"}).status_code == 403
            changelist = client.get(_url(f"{name}_changelist"))
            action_form = changelist.context["action_form"]
            if action_form is not None:
                assert "delete_selected" not in dict(action_form.fields["action"].choices), name
            assert "delete_selected" not in changelist.content.decode(), name
    assert Certificate.objects.filter(pk=certificate.pk).exists()
    assert Vendor.objects.filter(pk=vendor.pk).exists()


def test_helpdesk_cannot_reach_users_or_groups(helpdesk: Client) -> None:
    assert helpdesk.get(reverse("admin:auth_user_changelist")).status_code == 403
    assert helpdesk.get(reverse("admin:auth_group_changelist")).status_code == 403
    assert helpdesk.get(reverse("admin:auth_user_add")).status_code == 403


def test_helpdesk_cannot_change_what_services_own(
    helpdesk: Client, certificate: Certificate
) -> None:
    change = helpdesk.post(
        _url("mycert_certificate_change", certificate.pk), {"revocation_reason": "keyCompromise"}
    )
    add = helpdesk.get(_url("mycert_certificate_add"))

    assert change.status_code == 403
    assert add.status_code == 403


def _renderings(secret: bytes) -> set[str]:
    """The ways a page could show these bytes: as text, hex, base64 or a Python repr."""
    forms = {secret.hex(), base64.b64encode(secret).decode(), repr(secret)[2:-1]}
    with contextlib.suppress(UnicodeDecodeError):
        forms.add(secret.decode())
    return {form for form in forms if form}


def _chunks(text: str, size: int = 16) -> set[str]:
    return {text[i : i + size] for i in range(0, max(len(text) - size, 0) + 1, size)}


def test_sealed_payload_never_shown(helpdesk: Client, certificate: Certificate) -> None:
    deliveries = list(
        Delivery.objects.filter(certificate=certificate, sealed_payload__isnull=False)
    )
    assert {d.content for d in deliveries} >= {Delivery.Content.KEYSTORE, Delivery.Content.PASSWORD}
    secrets: set[str] = set()
    for delivery in deliveries:
        sealed = bytes(delivery.sealed_payload or b"")
        # The sealed token, and what it seals: the keystore's bytes, the password.
        for secret in (sealed, unseal(sealed)):
            for rendering in _renderings(secret):
                secrets |= _chunks(rendering)
    assert secrets

    pages = [helpdesk.get(_url("mycert_delivery_changelist"))]
    pages += [helpdesk.get(_url("mycert_delivery_change", d.pk)) for d in deliveries]
    pages.append(helpdesk.get(_url("mycert_delivery_changelist"), {"q": certificate.serial}))
    pages.append(helpdesk.get(_url("mycert_certificate_change", certificate.pk)))

    for page in pages:
        assert page.status_code == 200
        text = html.unescape(page.content.decode())
        shown = sorted(chunk for chunk in secrets if chunk in text)
        assert not shown, f"{page.wsgi_request.path} shows sealed bytes: {shown[:3]}"


def test_professional_is_sent_to_the_admin_login(client: Client) -> None:
    professional = _professional()
    client.force_login(professional.user)

    response = client.get(_url("index"))

    assert response.status_code == 302
    assert response["Location"].startswith(_url("login"))


# --- Deliveries ------------------------------------------------------------------------------


def test_retry_a_failed_delivery(helpdesk: Client, agent: User, certificate: Certificate) -> None:
    failed, other = Delivery.objects.filter(certificate=certificate).order_by("pk")[:2]
    Delivery.objects.filter(pk=failed.pk).update(
        status=Delivery.Status.FAILED, attempts=8, last_error="550 mailbox unavailable"
    )

    listing = helpdesk.get(_url("mycert_delivery_changelist"))
    assert "550 mailbox unavailable" in listing.content.decode()
    response = helpdesk.post(
        _url("mycert_delivery_changelist"),
        {"action": "retry_failed", "_selected_action": [failed.pk, other.pk]},
    )

    assert response.status_code == 302
    texts = _messages(response)
    assert any("1 delivery queued again" in m for m in texts)
    assert any("1 delivery skipped" in m for m in texts)
    failed.refresh_from_db()
    assert failed.status == Delivery.Status.PENDING
    assert failed.attempts == 0
    assert failed.last_error == ""
    event = AuditEvent.objects.get(action="delivery.retried", object_id=str(failed.pk))
    assert event.actor == f"user:{agent.pk}"


def test_retry_needs_change_delivery(certificate: Certificate) -> None:
    delivery = Delivery.objects.filter(certificate=certificate).first()
    assert delivery is not None
    Delivery.objects.filter(pk=delivery.pk).update(status=Delivery.Status.FAILED)
    viewer = _client_for(_staff("viewer", perms=("view_delivery",)))

    listing = viewer.get(_url("mycert_delivery_changelist"))
    viewer.post(
        _url("mycert_delivery_changelist"),
        {"action": "retry_failed", "_selected_action": [delivery.pk]},
    )

    assert "retry_failed" not in listing.content.decode()
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.FAILED


# --- Vendors ---------------------------------------------------------------------------------


def _vendor_form(**fields: Any) -> dict[str, Any]:
    return {"name": "Medsoft", "email": "support@medsoft.lu", "is_active": "on", **fields}


@pytest.fixture
def superuser() -> User:
    return User.objects.create_superuser("root", password=None)


@pytest.fixture
def admin_client_(superuser: User) -> Client:
    """A superuser: the only one who may add or change vendors."""
    return _client_for(superuser)


def test_the_helpdesk_group_holds_no_vendor_change_permission() -> None:
    codenames = set(
        Group.objects.get(name="Helpdesk").permissions.values_list("codename", flat=True)
    )
    assert "view_vendor" in codenames
    assert not codenames & {"add_vendor", "change_vendor", "delete_vendor"}


def test_the_helpdesk_sees_vendors_but_cannot_add_or_change_them(
    helpdesk: Client, mycert_gpg_home: Any
) -> None:
    vendor = _vendor(name="Medsoft", email="old@medsoft.lu")

    assert helpdesk.get(_url("mycert_vendor_changelist")).status_code == 200
    page = helpdesk.get(_url("mycert_vendor_change", vendor.pk))
    assert page.status_code == 200
    assert "old@medsoft.lu" in page.content.decode()
    assert 'name="email"' not in page.content.decode()  # read-only view
    changed = helpdesk.post(
        _url("mycert_vendor_change", vendor.pk), _vendor_form(email="evil@example.lu")
    )
    added = helpdesk.post(_url("mycert_vendor_add"), _vendor_form(name="Evil"))

    assert changed.status_code == 403
    assert added.status_code == 403
    assert Vendor.objects.get(pk=vendor.pk).email == "old@medsoft.lu"
    assert Vendor.objects.count() == 1


def test_even_a_staff_member_granted_change_vendor_cannot_change_one(
    mycert_gpg_home: Any,
) -> None:
    vendor = _vendor(name="Medsoft", email="old@medsoft.lu")
    staff = _client_for(_staff("granted", perms=("view_vendor", "add_vendor", "change_vendor")))

    response = staff.post(
        _url("mycert_vendor_change", vendor.pk), _vendor_form(email="evil@example.lu")
    )

    assert response.status_code == 403
    assert Vendor.objects.get(pk=vendor.pk).email == "old@medsoft.lu"


def test_add_vendor_with_a_usable_key(
    admin_client_: Client, superuser: User, mycert_gpg_home: Any, vendor_key: GpgKey
) -> None:
    response = admin_client_.post(
        _url("mycert_vendor_add"), _vendor_form(pgp_public_key=vendor_key.public)
    )

    assert response.status_code == 302
    vendor = Vendor.objects.get(name="Medsoft")
    assert vendor.pgp_fingerprint == vendor_key.fingerprint
    assert vendor.pgp_expires_at is not None
    assert any(vendor_key.fingerprint in m for m in _messages(response))
    event = AuditEvent.objects.get(action="vendor.created", object_id=str(vendor.pk))
    assert event.actor == f"user:{superuser.pk}"
    assert event.details["pgp_fingerprint"] == vendor_key.fingerprint
    assert OperatorAlert.objects.filter(
        kind="vendor_changed", recipient=OperatorAlert.Recipient.SECURITY
    ).exists()
    change_page = admin_client_.get(_url("mycert_vendor_change", vendor.pk))
    assert vendor_key.fingerprint in change_page.content.decode()


def test_adding_a_vendor_without_a_key_warns_it_will_not_be_offered(
    admin_client_: Client, mycert_gpg_home: Any
) -> None:
    response = admin_client_.post(_url("mycert_vendor_add"), _vendor_form())

    assert response.status_code == 302
    assert any("MYCERT_VENDOR_COPY_REQUIRES_PGP" in m for m in _messages(response))


def test_expired_vendor_key_is_refused(
    admin_client_: Client, mycert_gpg_home: Any, expired_key: GpgKey
) -> None:
    response = admin_client_.post(
        _url("mycert_vendor_add"), _vendor_form(pgp_public_key=expired_key.public)
    )

    assert response.status_code == 200
    assert "This OpenPGP key cannot be used" in response.content.decode()
    assert "expired" in response.content.decode()
    assert not Vendor.objects.exists()


def test_change_vendor_is_audited_and_reported_to_security(
    admin_client_: Client, superuser: User, mycert_gpg_home: Any
) -> None:
    vendor = _vendor(name="Medsoft", email="old@medsoft.lu")

    response = admin_client_.post(
        _url("mycert_vendor_change", vendor.pk),
        _vendor_form(email="new@medsoft.lu", legacy_keystore="on"),
    )

    assert response.status_code == 302
    vendor.refresh_from_db()
    assert vendor.email == "new@medsoft.lu"
    assert vendor.legacy_keystore
    event = AuditEvent.objects.get(action="vendor.changed", object_id=str(vendor.pk))
    assert event.actor == f"user:{superuser.pk}"
    assert event.details["changed"]["email"] == {"old": "old@medsoft.lu", "new": "new@medsoft.lu"}
    assert event.details["fingerprint"] == {"old": "", "new": ""}
    alert = OperatorAlert.objects.get(kind="vendor_changed")
    assert alert.recipient == OperatorAlert.Recipient.SECURITY
    assert "new@medsoft.lu" in alert.body
    assert "root" in alert.body  # who did it, by name


def test_a_key_added_in_the_admin_waits_for_the_worker_hosts_confirmation(
    admin_client_: Client, mycert_gpg_home: Any, vendor_key: GpgKey
) -> None:
    """Issue 20 §3: a superuser's change is a proposal; the admin says how to confirm it
    and never touches the keyring the workers believe (even on a shared host)."""
    from mycert.mail.anchor import vendor_anchor
    from mycert.mail.gpg import openpgp

    vendor = _vendor(name="Medsoft", email=vendor_key.uid_address)

    response = admin_client_.post(
        _url("mycert_vendor_change", vendor.pk),
        _vendor_form(email=vendor_key.uid_address, pgp_public_key=vendor_key.public),
    )

    assert response.status_code == 302
    assert any(f"confirm_vendor {vendor.pk}" in m for m in _messages(response))
    assert vendor_anchor().get(vendor.pk) is None
    assert openpgp().key_in_keyring(vendor_key.fingerprint, now=timezone.now()) is None


def test_a_key_without_the_vendors_address_is_flagged_in_the_admin(
    admin_client_: Client, mycert_gpg_home: Any, vendor_key: GpgKey
) -> None:
    response = admin_client_.post(
        _url("mycert_vendor_add"), _vendor_form(pgp_public_key=vendor_key.public)
    )

    assert response.status_code == 302
    assert any("does not carry the address support@medsoft.lu" in m for m in _messages(response))


def test_duplicate_vendor_name_is_refused(admin_client_: Client, mycert_gpg_home: Any) -> None:
    _vendor(name="Medsoft")

    response = admin_client_.post(_url("mycert_vendor_add"), _vendor_form(name="MEDSOFT"))

    assert response.status_code == 200
    assert Vendor.objects.count() == 1


def test_professional_admin_is_read_only(helpdesk: Client) -> None:
    professional = _professional()

    response = helpdesk.post(
        _url("mycert_professional_change", professional.pk), {"email": "x@example.lu"}
    )

    assert response.status_code == 403
    assert Professional.objects.get(pk=professional.pk).email != "x@example.lu"


def test_the_default_admin_site_is_the_helpdesk_site_with_every_model_registered() -> None:
    """Configured through ``AdminConfig.default_site`` (one site, not a patched instance)."""
    from django.contrib import admin as django_admin

    from mycert.admin.site import MyCertAdminSite

    assert isinstance(django_admin.site, MyCertAdminSite)
    assert django_admin.site.name == "admin"
    assert django_admin.site.is_registered(Certificate)
    assert django_admin.site.is_registered(User)
    assert "delete_selected" not in dict(django_admin.site.actions)


def test_the_helpdesk_never_sees_a_requests_id_token(helpdesk: Client) -> None:
    """Issue 20 §1: the proof of login is personal data (and replay material): never shown."""
    request = _request()
    assert request.id_token

    page = helpdesk.get(_url("mycert_certificaterequest_change", request.pk)).content.decode()

    assert request.id_token.split(".")[1] not in page

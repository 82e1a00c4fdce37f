"""The request form and My certificates, as a logged-in professional sees them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db.models import Q, UniqueConstraint
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from mycert.models import AuditEvent, CertificateRequest
from mycert.request_proof import token_digest
from tests.factories import CertificateRequestFactory, ProfessionalFactory, VendorFactory
from tests.support.id_tokens import force_login_with_proof

pytestmark = pytest.mark.django_db

# A pinned OpenPGP fingerprint: the form offers only vendors whose copies are encrypted
# (MYCERT_VENDOR_COPY_REQUIRES_PGP). No mail is sent here, so no key is needed in gpg.
PINNED = "A" * 40


@pytest.fixture
def queued(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the ids sent to the issuance task instead of running it (the broker's job)."""
    from mycert.tasks.issuance import issue_certificate

    sent: list[int] = []
    monkeypatch.setattr(issue_certificate, "delay", lambda request_id: sent.append(request_id))
    return sent


@pytest.fixture
def professional_client(client: Client):
    professional = ProfessionalFactory.create()
    force_login_with_proof(client, professional)
    client.professional = professional  # type: ignore[attr-defined]
    return client


def test_anonymous_is_sent_to_login(client: Client) -> None:
    response = client.get(reverse("request-certificate"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("oidc-login"))


def test_form_in_french_by_default(professional_client: Client) -> None:
    VendorFactory.create(name="Logiciel Médical SA", pgp_fingerprint=PINNED)
    VendorFactory.create(name="Ancien Éditeur", is_active=False, pgp_fingerprint=PINNED)
    response = professional_client.get(reverse("request-certificate"))
    page = response.content.decode()
    assert response.status_code == 200
    assert "Je n&#x27;ai pas d&#x27;éditeur" in page or "Je n'ai pas d'éditeur" in page
    assert "Je confirme avoir pris connaissance des informations d&#x27;utilisation" in page or (
        "Je confirme avoir pris connaissance des informations d'utilisation" in page
    )
    assert "Envoyer" in page
    assert "helpdesk@esante.lu" in page
    assert "Logiciel Médical SA" in page
    assert "Ancien Éditeur" not in page


def test_submit_records_request_consent_and_queues_issuance(
    professional_client: Client, queued: list[int], django_capture_on_commit_callbacks
) -> None:
    vendor = VendorFactory.create(pgp_fingerprint=PINNED)
    with django_capture_on_commit_callbacks(execute=True):
        response = professional_client.post(
            reverse("request-certificate"), {"vendor": str(vendor.pk), "terms_accepted": "on"}
        )
    assert response.status_code == 302
    request = CertificateRequest.objects.get()
    assert response["Location"] == reverse("request-sent", args=[request.pk])
    assert request.vendor == vendor
    assert request.vendor_copy_consent is True
    assert request.terms_version == "2023-03"
    assert request.status == CertificateRequest.Status.SUBMITTED
    assert request.due_at > request.submitted_at
    assert queued == [request.pk]
    assert AuditEvent.objects.filter(action="request.submitted", object_id=str(request.pk)).exists()
    sent_page = professional_client.get(response["Location"]).content.decode()
    assert "Demande envoyée." in sent_page


def test_the_request_carries_the_logins_signed_id_token(
    professional_client: Client, queued: list[int]
) -> None:
    """Issue 20 §1: the worker's proof is the session's ID token; the trail keeps its digest."""
    token = professional_client.session["mycert_oidc_id_token"]

    response = professional_client.post(
        reverse("request-certificate"), {"vendor": "none", "terms_accepted": "on"}
    )

    assert response.status_code == 302
    request = CertificateRequest.objects.get()
    assert request.id_token == token
    event = AuditEvent.objects.get(action="request.submitted", object_id=str(request.pk))
    assert event.details["proof"] == token_digest(token)
    assert token not in str(event.details)


def test_a_session_without_a_proof_of_login_cannot_submit(
    client: Client, queued: list[int]
) -> None:
    """A session opened without the portal's ID token (before the upgrade): log in again."""
    professional = ProfessionalFactory.create()
    client.force_login(professional.user)

    response = client.post(
        reverse("request-certificate"), {"vendor": "none", "terms_accepted": "on"}
    )

    assert response.status_code == 400
    assert "Déconnectez-vous, puis reconnectez-vous." in response.content.decode()
    assert not CertificateRequest.objects.exists()
    assert queued == []


def test_the_request_speaks_the_professionals_language_not_the_pages(
    professional_client: Client, queued: list[int]
) -> None:
    """The portal's locale (kept on the professional at login) chooses the e-mails' language."""
    professional = professional_client.professional  # type: ignore[attr-defined]
    professional.language = "de"
    professional.save(update_fields=["language"])

    response = professional_client.post(
        reverse("request-certificate"), {"vendor": "none", "terms_accepted": "on"}
    )

    assert response.status_code == 302
    assert "Demande envoyée." in professional_client.get(response["Location"]).content.decode()
    assert CertificateRequest.objects.get().language == "de"


def test_no_vendor_choice(professional_client: Client, queued: list[int]) -> None:
    response = professional_client.post(
        reverse("request-certificate"), {"vendor": "none", "terms_accepted": "on"}
    )
    assert response.status_code == 302
    request = CertificateRequest.objects.get()
    assert request.vendor is None
    assert request.vendor_copy_consent is False


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"vendor": "none"}, "informations d&#x27;utilisation"),
        ({"terms_accepted": "on"}, "Choisissez votre éditeur"),
        ({"vendor": "999999", "terms_accepted": "on"}, "pas dans la liste"),
        ({"vendor": "<script>", "terms_accepted": "on"}, "pas dans la liste"),
    ],
)
def test_bad_input_is_refused_clearly(
    professional_client: Client, queued: list[int], data: dict[str, str], message: str
) -> None:
    response = professional_client.post(reverse("request-certificate"), data)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not CertificateRequest.objects.exists()
    assert queued == []


def test_a_vendor_without_a_usable_key_is_neither_offered_nor_accepted(
    professional_client: Client, queued: list[int]
) -> None:
    """A copy in clear would put the keystore and its password in one mailbox."""
    keyless = VendorFactory.create(name="Éditeur sans clé")
    expired = VendorFactory.create(
        name="Éditeur clé échue",
        pgp_fingerprint=PINNED,
        pgp_expires_at=timezone.now() - timedelta(days=1),
    )

    page = professional_client.get(reverse("request-certificate")).content.decode()
    assert "Éditeur sans clé" not in page
    assert "Éditeur clé échue" not in page
    for vendor in (keyless, expired):
        response = professional_client.post(
            reverse("request-certificate"), {"vendor": str(vendor.pk), "terms_accepted": "on"}
        )
        assert response.status_code == 400
    assert not CertificateRequest.objects.exists()


def test_inactive_vendor_is_refused(professional_client: Client, queued: list[int]) -> None:
    vendor = VendorFactory.create(is_active=False)
    response = professional_client.post(
        reverse("request-certificate"), {"vendor": str(vendor.pk), "terms_accepted": "on"}
    )
    assert response.status_code == 400
    assert not CertificateRequest.objects.exists()


def test_second_request_in_progress_is_refused(
    professional_client: Client, queued: list[int]
) -> None:
    CertificateRequestFactory.create(professional=professional_client.professional)  # type: ignore[attr-defined]
    response = professional_client.post(
        reverse("request-certificate"), {"vendor": "none", "terms_accepted": "on"}
    )
    assert response.status_code == 409
    assert "déjà en cours" in response.content.decode()
    assert CertificateRequest.objects.count() == 1
    assert queued == []


def test_missing_csrf_token_is_refused(queued: list[int]) -> None:
    client = Client(enforce_csrf_checks=True)
    professional = ProfessionalFactory.create()
    client.force_login(professional.user)
    response = client.post(
        reverse("request-certificate"), {"vendor": "none", "terms_accepted": "on"}
    )
    assert response.status_code == 403
    assert not CertificateRequest.objects.exists()


def test_staff_without_professional_account_gets_explanation(client: Client) -> None:
    staff = get_user_model().objects.create_user("agent", password=None, is_staff=True)
    client.force_login(staff)
    response = client.get(reverse("request-certificate"))
    assert response.status_code == 403
    assert "professionnel" in response.content.decode()


def test_my_certificates_shows_only_own_requests(professional_client: Client) -> None:
    mine = CertificateRequestFactory.create(professional=professional_client.professional)  # type: ignore[attr-defined]
    other = CertificateRequestFactory.create()
    page = professional_client.get(reverse("my-certificates")).content.decode()
    assert f'id="request-{mine.pk}"' in page
    assert f'id="request-{other.pk}"' not in page
    status = professional_client.get(reverse("my-certificates-status")).json()
    assert [row["id"] for row in status["requests"]] == [mine.pk]
    assert status["in_progress"] is True


def test_another_professionals_request_is_not_found(professional_client: Client) -> None:
    other = CertificateRequestFactory.create()
    response = professional_client.get(reverse("request-sent", args=[other.pk]))
    assert response.status_code == 404


def test_language_switch_to_german(professional_client: Client) -> None:
    professional_client.post(reverse("set_language"), {"language": "de", "next": "/request/"})
    page = professional_client.get(reverse("request-certificate")).content.decode()
    assert "Senden" in page
    assert 'lang="de"' in page


def test_the_header_names_the_logged_in_professional(professional_client: Client) -> None:
    professional = professional_client.professional  # type: ignore[attr-defined]
    page = professional_client.get(reverse("my-certificates")).content.decode()
    header = page[page.index("<header") : page.index("</header>")]
    assert professional.full_name in header


def test_the_usage_text_points_to_self_revocation(professional_client: Client) -> None:
    page = professional_client.get(reverse("request-certificate")).content.decode()
    usage = page[page.index('class="usage"') :]
    usage = usage[: usage.index("</section>")]
    # The agency's own sentence stays, one more points to « Mes certificats ».
    assert "par e-mail à helpdesk@esante.lu" in usage or "helpdesk@esante.lu" in usage
    assert "vous-même depuis la page «\u00a0Mes certificats\u00a0»" in usage


def test_the_favicon_is_served(client: Client) -> None:
    response = client.get("/favicon.ico", follow=True)
    assert response.status_code == 200
    assert response.redirect_chain[-1][0].endswith(".ico")
    body = b"".join(response.streaming_content) if response.streaming else response.content  # type: ignore[attr-defined]
    assert body[:4] == b"\x00\x00\x01\x00"  # an ICO file
    page = client.get("/").content.decode()
    assert 'rel="icon"' in page
    assert 'href="data:,"' not in page


def test_the_request_page_fetches_the_professional_once(
    professional_client: Client, django_assert_num_queries
) -> None:
    """The decorator hands the professional it found to the view (``request.professional``)."""
    VendorFactory.create(pgp_fingerprint=PINNED)
    # Session, user, professional (once: the view and the base template reuse it), request
    # in progress, valid certificate, vendors, then the session's save (savepoint, update,
    # release). Before ``request.professional``, the professional was read three times (11).
    with django_assert_num_queries(9):
        response = professional_client.get(reverse("request-certificate"))
    assert response.status_code == 200


def test_the_database_constraint_covers_exactly_the_in_progress_states() -> None:
    """``Meta`` spells the states out; they must stay ``CertificateRequest.IN_PROGRESS``."""
    (constraint,) = CertificateRequest._meta.constraints
    assert isinstance(constraint, UniqueConstraint)
    assert constraint.condition == Q(status__in=list(CertificateRequest.IN_PROGRESS))

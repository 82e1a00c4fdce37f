"""MyCert's data: vendors, professionals, requests, certificates, the outbox, CRLs, audit.

Private keys and keystore passwords are never stored in clear: the outbox keeps the
keystore and the password sealed (see ``mycert.sealing``) only until they are sent.
Nothing here is ever deleted by the application; the admin grants no delete.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from mycert.querysets import CertificateQuerySet, CertificateRequestQuerySet, DeliveryQuerySet


class Vendor(models.Model):
    """A software vendor ("éditeur") who may receive a copy of a professional's keystore."""

    name = models.CharField(_("name"), max_length=200, unique=True)
    email = models.EmailField(_("e-mail"))
    pgp_public_key = models.TextField(
        _("OpenPGP public key"),
        blank=True,
        help_text=_("ASCII-armored; mail is encrypted when set."),
    )
    pgp_fingerprint = models.CharField(_("OpenPGP fingerprint"), max_length=40, blank=True)
    pgp_expires_at = models.DateTimeField(_("OpenPGP key expires"), null=True, blank=True)
    legacy_keystore = models.BooleanField(
        _("legacy keystore (3DES)"),
        default=False,
        help_text=_("For software that cannot read AES-256 PKCS#12 keystores."),
    )
    is_active = models.BooleanField(_("active"), default=True)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        verbose_name = _("vendor")
        verbose_name_plural = _("vendors")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Professional(models.Model):
    """A health professional, known to MyCert through the portal's OpenID subject."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="professional"
    )
    oidc_subject = models.CharField(_("OpenID subject"), max_length=255, unique=True)
    professional_id = models.CharField(_("professional identifier"), max_length=64, unique=True)
    given_name = models.CharField(_("given name"), max_length=150)
    family_name = models.CharField(_("family name"), max_length=150)
    email = models.EmailField(_("e-mail"))
    language = models.CharField(_("language"), max_length=8, default="fr")
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("professional")
        verbose_name_plural = _("professionals")
        ordering = ["family_name", "given_name"]

    def __str__(self) -> str:
        return f"{self.given_name} {self.family_name} ({self.professional_id})"

    @property
    def full_name(self) -> str:
        return f"{self.given_name} {self.family_name}"


class CertificateRequest(models.Model):
    """One "Envoyer" on the form: the professional's request and their consent."""

    class Status(models.TextChoices):
        # "request state": French agrees these with « la demande » (soumise, envoyée…),
        # as the professional's pages do (mycert/selectors.py).
        SUBMITTED = "submitted", pgettext_lazy("request state", "submitted")
        ISSUING = "issuing", pgettext_lazy("request state", "issuing")
        SENDING = "sending", pgettext_lazy("request state", "sending")
        SENT = "sent", pgettext_lazy("request state", "sent")
        FAILED = "failed", pgettext_lazy("request state", "failed")

    IN_PROGRESS = (Status.SUBMITTED, Status.ISSUING, Status.SENDING)

    professional = models.ForeignKey(
        Professional,
        on_delete=models.PROTECT,
        related_name="requests",
        verbose_name=_("professional"),
    )
    vendor = models.ForeignKey(
        Vendor,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="requests",
        verbose_name=_("vendor"),
    )
    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.SUBMITTED
    )
    key_type = models.CharField(_("key type"), max_length=16)
    language = models.CharField(_("language"), max_length=8, default="fr")
    terms_version = models.CharField(_("usage terms version"), max_length=32)
    terms_accepted_at = models.DateTimeField(_("usage terms accepted"))
    vendor_copy_consent = models.BooleanField(_("consent to the vendor copy"), default=False)
    submitted_at = models.DateTimeField(_("submitted"), auto_now_add=True)
    due_at = models.DateTimeField(
        _("due"), help_text=_("5 Luxembourg business days after submission.")
    )
    completed_at = models.DateTimeField(_("completed"), null=True, blank=True)
    last_error = models.TextField(_("last error"), blank=True)
    #: The signed ID token of the login that submitted the request: the worker's proof
    #: that a professional asked (mycert.request_proof). Personal data, wiped once the
    #: request is issued or ends; the audit trail keeps only its digest.
    id_token = models.TextField(_("proof of login"), blank=True, editable=False)

    objects = CertificateRequestQuerySet.as_manager()

    class Meta:
        verbose_name = _("certificate request")
        verbose_name_plural = _("certificate requests")
        ordering = ["-submitted_at"]
        constraints = [
            # One request in progress per professional, enforced by the database so
            # that two simultaneous "Envoyer" cannot both pass. The states are IN_PROGRESS,
            # spelt out because Meta cannot see the class body (a test compares them).
            models.UniqueConstraint(
                fields=["professional"],
                condition=Q(status__in=["submitted", "issuing", "sending"]),
                name="one_request_in_progress_per_professional",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.get_status_display()}"

    @property
    def is_in_progress(self) -> bool:
        return self.status in self.IN_PROGRESS


class Certificate(models.Model):
    """An issued X.509 certificate (public part only) and its revocation state."""

    class RevocationReason(models.TextChoices):
        # RFC 5280 §5.3.1 CRLReason names, as cryptography's x509.ReasonFlags values.
        UNSPECIFIED = "unspecified", _("unspecified")
        KEY_COMPROMISE = "keyCompromise", _("key compromise")
        AFFILIATION_CHANGED = "affiliationChanged", _("affiliation changed")
        SUPERSEDED = "superseded", _("superseded")
        # What « cessation of operation » means in RFC 5280 §5.3.1 for a personal
        # certificate: the holder no longer needs it. Translated literally, a French
        # doctor reads « cessation d'activité », "stopped practising".
        CESSATION_OF_OPERATION = "cessationOfOperation", _("certificate no longer needed")
        CERTIFICATE_HOLD = "certificateHold", _("certificate hold")
        PRIVILEGE_WITHDRAWN = "privilegeWithdrawn", _("privilege withdrawn")

    class RevokedVia(models.TextChoices):
        HELPDESK = "helpdesk", _("helpdesk")
        PROFESSIONAL = "professional", _("professional")
        SUPERSEDED = "superseded", _("new certificate delivered")
        #: The holder, without logging in, with the code of their password e-mail.
        CODE = "code", _("revocation code")
        UNDELIVERED = "undelivered", _("never delivered")

    request = models.OneToOneField(
        CertificateRequest,
        on_delete=models.PROTECT,
        related_name="certificate",
        verbose_name=_("request"),
    )
    professional = models.ForeignKey(
        Professional,
        on_delete=models.PROTECT,
        related_name="certificates",
        verbose_name=_("professional"),
    )
    # Hex text: 159-bit serials overflow a BigIntegerField (RFC 5280 §4.1.2.2).
    serial = models.CharField(_("serial number"), max_length=40, unique=True)
    subject = models.CharField(_("subject"), max_length=500)
    issuer = models.CharField(_("issuer"), max_length=500)
    key_type = models.CharField(_("key type"), max_length=16)
    not_before = models.DateTimeField(_("valid from"))
    not_after = models.DateTimeField(_("valid until"))
    fingerprint_sha256 = models.CharField(_("SHA-256 fingerprint"), max_length=64, unique=True)
    pem = models.TextField(_("certificate (PEM)"))
    #: Digest of the verified ID token that authorised it (``request_proof.proof_digest``):
    #: unique, so one login yields one certificate at most. Empty before issue 20.
    proof_digest = models.CharField(
        _("proof of login (SHA-256)"),
        max_length=64,
        null=True,
        blank=True,
        unique=True,
        editable=False,
    )
    issued_at = models.DateTimeField(_("issued"), auto_now_add=True)
    revoked_at = models.DateTimeField(_("revoked"), null=True, blank=True)
    revocation_reason = models.CharField(
        _("revocation reason"), max_length=32, choices=RevocationReason.choices, blank=True
    )
    compromised_at = models.DateTimeField(_("compromise date"), null=True, blank=True)
    revocation_comment = models.TextField(_("revocation comment"), blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("revoked by"),
    )
    revoked_via = models.CharField(
        _("revoked via"), max_length=16, choices=RevokedVia.choices, blank=True
    )
    expiry_reminders_sent = models.JSONField(
        _("expiry reminders sent (days)"), default=list, blank=True
    )
    # A slow hash (scrypt) of the code that revokes this certificate without a login;
    # the code itself exists only sealed in the password e-mail until it is sent.
    # Emptied when the certificate is revoked that way. Never shown (editable=False).
    revocation_code_hash = models.CharField(
        _("revocation code hash"), max_length=255, blank=True, editable=False
    )

    objects = CertificateQuerySet.as_manager()

    class Meta:
        verbose_name = _("certificate")
        verbose_name_plural = _("certificates")
        ordering = ["-issued_at"]
        permissions = [("revoke_certificate", _("Can revoke certificates"))]
        indexes = [
            models.Index(fields=["revoked_at"]),
            models.Index(fields=["not_after"]),
            # The admin's list, newest first (migration 0016 adds its search's indexes).
            models.Index(fields=["issued_at", "id"], name="certificate_issued_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.serial[:16]}… ({self.professional_id})"

    @property
    def serial_number(self) -> int:
        return int(self.serial, 16)

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None


class Delivery(models.Model):
    """One e-mail of the transactional outbox: (professional | vendor) × (keystore | password)."""

    class Recipient(models.TextChoices):
        PROFESSIONAL = "professional", _("professional")
        VENDOR = "vendor", _("vendor")

    class Content(models.TextChoices):
        KEYSTORE = "keystore", _("keystore")
        PASSWORD = "password", _("password")
        REVOCATION_NOTICE = "revocation", _("revocation notice")
        EXPIRY_REMINDER = "expiry", _("expiry reminder")

    class Status(models.TextChoices):
        PENDING = "pending", _("pending")
        RETRYING = "retrying", _("retrying after a temporary error")
        SENT = "sent", _("sent")
        FAILED = "failed", _("failed, needs the helpdesk")
        CANCELLED = "cancelled", _("cancelled: certificate revoked or vendor deactivated")

    #: The two e-mails of an issuance; the notices carry no secret.
    ISSUANCE = (Content.KEYSTORE, Content.PASSWORD)

    certificate = models.ForeignKey(
        Certificate,
        on_delete=models.PROTECT,
        related_name="deliveries",
        verbose_name=_("certificate"),
    )
    recipient = models.CharField(_("recipient"), max_length=16, choices=Recipient.choices)
    content = models.CharField(_("content"), max_length=16, choices=Content.choices)
    to_email = models.EmailField(_("to"))
    vendor = models.ForeignKey(
        Vendor,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("vendor"),
    )
    language = models.CharField(_("language"), max_length=8, default="fr")
    # The OpenPGP key the mail is encrypted to, pinned at creation (empty: not encrypted).
    pgp_fingerprint = models.CharField(_("OpenPGP fingerprint"), max_length=40, blank=True)
    sealed_payload = models.BinaryField(_("sealed payload"), null=True, blank=True, editable=False)
    # The password e-mail waits until the keystore e-mail to the same person was accepted.
    after = models.ForeignKey(
        "self",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("sent after"),
    )
    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.PENDING
    )
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    last_error = models.TextField(_("last error"), blank=True)
    next_attempt_at = models.DateTimeField(_("next attempt"), null=True, blank=True)
    message_id = models.CharField(_("Message-ID"), max_length=255, unique=True)
    key = models.CharField(
        _("idempotency key"),
        max_length=64,
        unique=True,
        help_text=_("Makes creating a notice twice impossible."),
    )
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)
    sent_at = models.DateTimeField(_("sent"), null=True, blank=True)
    #: When the helpdesk's alert of this e-mail's failure for good was written: the
    #: outbox sweep reports what a worker lost before it could.
    failure_reported_at = models.DateTimeField(
        _("failure reported"), null=True, blank=True, editable=False
    )
    #: A vendor copy the worker refused because its address or key disagrees with what
    #: a security officer confirmed on the worker host (``mycert.mail.anchor``): the
    #: failure's report also goes to ``MYCERT_SECURITY_EMAIL``.
    recipient_refused = models.BooleanField(
        _("refused: not the confirmed vendor address or key"), default=False, editable=False
    )

    objects = DeliveryQuerySet.as_manager()

    class Meta:
        verbose_name = _("delivery")
        verbose_name_plural = _("deliveries")
        ordering = ["-created_at", "pk"]
        indexes = [models.Index(fields=["status", "next_attempt_at"])]

    def __str__(self) -> str:
        return f"#{self.pk} {self.get_content_display()} → {self.get_recipient_display()}"


class Crl(models.Model):
    """A signed CRL as published; the web process serves the newest one as stored."""

    number = models.PositiveBigIntegerField(_("CRL number"), unique=True)
    this_update = models.DateTimeField(_("this update"))
    next_update = models.DateTimeField(_("next update"))
    entries = models.PositiveIntegerField(_("revoked entries"))
    der = models.BinaryField(_("DER"))
    created_at = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        verbose_name = _("CRL")
        verbose_name_plural = _("CRLs")
        ordering = ["-number"]
        get_latest_by = "number"

    def __str__(self) -> str:
        return f"CRL #{self.number}"


class OcspResponse(models.Model):
    """A certificate's OCSP answer, signed ahead by a worker; the web serves these bytes.

    One row per certificate, one signed response per CertID hash algorithm (RFC 6960
    §4.1.1: a response echoes the request's hashAlgorithm; web hosts hold no key to sign
    another on demand). Re-signed on issuance, on revocation and by beat before half its
    validity has passed.
    """

    class Status(models.TextChoices):
        GOOD = "good", _("good")
        REVOKED = "revoked", _("revoked")

    certificate = models.OneToOneField(
        Certificate,
        on_delete=models.PROTECT,
        primary_key=True,
        related_name="ocsp_response",
        verbose_name=_("certificate"),
    )
    status = models.CharField(_("status"), max_length=8, choices=Status.choices)
    this_update = models.DateTimeField(_("this update"))
    next_update = models.DateTimeField(_("next update"))
    der_sha1 = models.BinaryField(_("DER (SHA-1 CertID)"))
    der_sha256 = models.BinaryField(_("DER (SHA-256 CertID)"))
    #: The certificate has passed its end: the web answers "unauthorized" whatever is
    #: stored, and beat no longer re-signs it. Set once by beat's refresh, so that the
    #: refresh's index holds the live answers only (issue 24 §5).
    certificate_expired = models.BooleanField(
        _("certificate expired"), default=False, editable=False
    )

    class Meta:
        verbose_name = _("OCSP response")
        verbose_name_plural = _("OCSP responses")
        indexes = [
            models.Index(fields=["this_update"]),
            models.Index(
                fields=["this_update"],
                name="ocsp_live_this_update_idx",
                condition=Q(certificate_expired=False),
            ),
            # The health probe's nearest nextUpdate (ocsp_answers_earliest_next_update).
            models.Index(
                fields=["next_update"],
                name="ocsp_live_next_update_idx",
                condition=Q(certificate_expired=False),
            ),
        ]

    def __str__(self) -> str:
        return f"OCSP {self.status} for certificate {self.certificate_id}"


class AuditEvent(models.Model):
    """An append-only audit record, hash-chained to the one before it."""

    class HashScheme(models.TextChoices):
        # Events written before MYCERT_AUDIT_KEY existed (mycert.services.audit).
        SHA256 = "sha256", _("SHA-256 (unkeyed)")
        HMAC_SHA256 = "hmac-sha256", _("HMAC-SHA-256 (keyed)")

    class Action(models.TextChoices):
        """Every event the trail records, named once (tests/test_event_names.py).

        The codes are data: stable, searchable and hashed into the chain, so a code is
        never renamed; only its label, in the reader's language, may change.
        """

        # The chain itself (mycert.services.audit).
        AUDIT_CHAIN_KEYED = (
            "audit.chain_keyed",
            _("Audit chain keyed (MYCERT_AUDIT_KEY) from here on"),
        )
        AUDIT_DOWNGRADE_DETECTED = (
            "audit.downgrade_detected",
            _(
                "Audit chain rewritten without the key: an unkeyed link after the keyed chain (found here)"
            ),
        )
        # Professionals (mycert.services.professionals).
        AUTH_LOGIN = "auth.login", _("Professional logged in")
        AUTH_LOGIN_REFUSED = "auth.login_refused", _("Professional login refused")
        AUTH_LOGOUT = "auth.logout", _("Professional logged out")
        # Staff (mycert.services.staff). The admin.<model>_<verb> codes are made from the
        # admin's log entries, one per model the admin shows of the audited apps.
        STAFF_LOGIN = "staff.login", _("Staff member signed in to the admin")
        STAFF_LOGIN_FAILED = "staff.login_failed", _("Failed sign-in to the admin")
        ADMIN_USER_ADDED = "admin.user_added", _("User account added")
        ADMIN_USER_CHANGED = "admin.user_changed", _("User account changed")
        ADMIN_USER_DELETED = "admin.user_deleted", _("User account deleted")
        ADMIN_GROUP_ADDED = "admin.group_added", _("Group added")
        ADMIN_GROUP_CHANGED = "admin.group_changed", _("Group changed")
        ADMIN_GROUP_DELETED = "admin.group_deleted", _("Group deleted")
        ADMIN_TOTPDEVICE_ADDED = "admin.totpdevice_added", _("TOTP device added")
        ADMIN_TOTPDEVICE_CHANGED = "admin.totpdevice_changed", _("TOTP device changed")
        ADMIN_TOTPDEVICE_DELETED = "admin.totpdevice_deleted", _("TOTP device deleted")
        ADMIN_TOTP_DEVICE_CREATED = "admin.totp_device_created", _("TOTP device created (command)")
        # The CA (manage.py init_ca).
        CA_CREATED = "ca.created", _("CA created")
        CA_IMPORTED = "ca.imported", _("CA imported")
        # Requests and certificates (mycert.services).
        REQUEST_SUBMITTED = "request.submitted", _("Certificate request submitted")
        REQUEST_UNPROVEN = (
            "request.unproven",
            _("Certificate request refused: its proof of login does not verify"),
        )
        REQUEST_SENT = "request.sent", _("Certificate request completed")
        REQUEST_FAILED = "request.failed", _("Certificate request failed")
        CERTIFICATE_ISSUED = "certificate.issued", _("Certificate issued")
        CERTIFICATE_REVOKED = "certificate.revoked", _("Certificate revoked")
        # The outbox (mycert.outbox).
        DELIVERY_SENT = "delivery.sent", _("E-mail sent")
        DELIVERY_FAILED = "delivery.failed", _("E-mail failed")
        DELIVERY_RETRIED = "delivery.retried", _("E-mail queued again")
        DELIVERY_CANCELLED = "delivery.cancelled", _("E-mail cancelled before it was sent")
        DELIVERY_PAYLOAD_WIPED = (
            "delivery.payload_wiped",
            _("Sealed keystores and passwords of failed e-mails wiped"),
        )
        OUTBOX_RESEALED = (
            "outbox.resealed",
            _("Waiting e-mails sealed again with the new outbox key"),
        )
        # Vendors (mycert.services.vendors).
        VENDOR_CREATED = "vendor.created", _("Vendor added")
        VENDOR_CHANGED = "vendor.changed", _("Vendor changed")
        VENDOR_CONFIRMED = "vendor.confirmed", _("Vendor confirmed on a worker host")
        VENDOR_WITHDRAWN = "vendor.withdrawn", _("Vendor withdrawn from a worker host")
        # The relying parties' self-check (mycert.services.selfcheck).
        SELFCHECK_CHECKED = (
            "selfcheck.checked",
            _("Certificate checked on « Does my certificate work? »"),
        )

    created_at = models.DateTimeField(_("time"))
    actor = models.CharField(_("actor"), max_length=150)
    action = models.CharField(_("action"), max_length=64, choices=Action.choices)
    object_type = models.CharField(_("object type"), max_length=64, blank=True)
    object_id = models.CharField(_("object id"), max_length=64, blank=True)
    details = models.JSONField(_("details"), default=dict, blank=True)
    # Unique: two events can never claim the same predecessor (no forks in the chain).
    previous_hash = models.CharField(_("previous hash"), max_length=64, unique=True)
    hash = models.CharField(_("hash"), max_length=64, unique=True)
    hash_scheme = models.CharField(
        _("hash scheme"), max_length=16, choices=HashScheme.choices, default=HashScheme.SHA256
    )

    class Meta:
        verbose_name = _("audit event")
        verbose_name_plural = _("audit events")
        ordering = ["-pk"]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            raise ValueError("Audit events are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise ValueError("Audit events are append-only.")


class OperatorAlert(models.Model):
    """An e-mail to the agency's own staff (helpdesk or security), kept until sent.

    Written in the transaction of the event it reports, like the outbox's rows, so an
    alert is never lost when the broker or the relay is down; the sweep sends what is
    left. It carries no secret: names and ids for the staff to act on.
    """

    class Recipient(models.TextChoices):
        HELPDESK = "helpdesk", _("helpdesk")
        SECURITY = "security", _("security")

    class Kind(models.TextChoices):
        """Every alert, named once; each has ``templates/emails/alerts/<kind>_subject.txt``
        and ``<kind>.txt`` (tests/test_event_names.py)."""

        AUDIT_TAMPERED = "audit_tampered", _("Audit trail tampered with")
        CRL_PUBLICATION_REFUSED = "crl_publication_refused", _("CRL publication stopped")
        DELIVERY_FAILED = "delivery_failed", _("Certificate e-mail failed for good")
        DELIVERY_REDIRECTED = (
            "delivery_redirected",
            _("Certificate e-mail redirected to another address, not sent"),
        )
        HSM_PIN_REFUSED = "hsm_pin_refused", _("HSM refuses the workers' PIN")
        KEY_COMPROMISE_REPORTED = (
            "key_compromise_reported",
            _("Key compromise reported by the professional"),
        )
        REQUEST_FAILED = "request_failed", _("Certificate request failed")
        REQUEST_UNPROVEN = (
            "request_unproven",
            _("Certificate request refused: its proof of login does not verify"),
        )
        REVOCATION_CLEARED = "revocation_cleared", _("Revocation cleared in the database")
        VENDOR_CHANGED = "vendor_changed", _("Vendor added or changed")
        VENDOR_COPY_REFUSED = (
            "vendor_copy_refused",
            _("Vendor copy refused: address or key not confirmed"),
        )

    recipient = models.CharField(_("recipient"), max_length=16, choices=Recipient.choices)
    kind = models.CharField(_("kind"), max_length=64, choices=Kind.choices)
    subject = models.CharField(_("subject"), max_length=255)
    body = models.TextField(_("body"))
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    last_error = models.TextField(_("last error"), blank=True)
    next_attempt_at = models.DateTimeField(_("next attempt"), null=True, blank=True)
    sent_at = models.DateTimeField(_("sent"), null=True, blank=True)

    class Meta:
        verbose_name = _("staff alert")
        verbose_name_plural = _("staff alerts")
        ordering = ["-pk"]
        indexes = [
            models.Index(
                fields=["created_at"], name="alert_unsent_idx", condition=Q(sent_at__isnull=True)
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_recipient_display()}: {self.subject}"

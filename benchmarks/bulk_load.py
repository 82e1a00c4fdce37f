"""Grow the database fast with issuances that look real (issue 24 §5, the growth figure).

Issuing 17,620 certificates for real would take 13 minutes of key generation, scrypt,
PKCS#12 and OpenPGP. The growth figure needs the *database* of 17,620 issuances, not
their cryptography: :func:`clone_issuances` copies the rows that real issuances of this
run wrote (user, professional, request, certificate, deliveries, OCSP answer, audit
events), through the models' bulk inserts, with fresh unique values (serial, SHA-256
fingerprint, proof digest, Message-ID, idempotency key, identifiers) and the audit events
chained onto the chain's head with ``mycert.services.audit.event_hash`` (so
``audit_verify_chain`` still holds). Same columns, same sizes, same statuses, same
indexes to maintain: only the certificate bytes are copies of a real one's (a database
never parses them on the issuance path). Then the tables are ANALYZEd, as autovacuum
would have done many times over while they grew; :func:`settle_after_load` then
VACUUMs them and checkpoints, so that the next measured batch does not pay for the load.

Run it while no worker writes (between two population runs): it appends to the audit
chain outside ``audit_record``'s lock.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

_BATCH = 1000


def _fresh(template: str | None) -> str | None:
    """A random hex value of the same length and case as ``template``."""
    if template is None or not template:
        return template
    value = secrets.token_hex(len(template) // 2 + 1)[: len(template)]
    return value.upper() if template.isupper() else value


def _message_id(template: str) -> str:
    domain = template.rsplit("@", 1)[-1] if "@" in template else "bench>"
    return f"<{secrets.token_hex(16)}@{domain}"


def clone_issuances(
    template_request_ids: Sequence[int], count: int, audit_events: Sequence[int]
) -> dict[str, int]:
    """Add ``count`` issuances copied round-robin from the template requests' rows.

    ``audit_events``: ids of the audit events the template issuances wrote; as many are
    copied per issuance as they wrote on average. Returns the rows written per table.
    """
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import transaction
    from django.utils import timezone

    from mycert.models import (
        AuditEvent,
        Certificate,
        CertificateRequest,
        Delivery,
        OcspResponse,
        Professional,
    )
    from mycert.services.audit import SCHEME_HMAC, event_hash

    user_model = get_user_model()
    templates = list(
        CertificateRequest.objects.filter(pk__in=template_request_ids).select_related(
            "professional__user", "certificate__ocsp_response"
        )
    )
    templates = [t for t in templates if hasattr(t, "certificate")]
    if not templates:
        raise ValueError("no issued template request to copy")
    deliveries_of: dict[int, list[Delivery]] = {}
    for delivery in Delivery.objects.filter(
        certificate__request_id__in=[t.pk for t in templates]
    ).order_by("pk"):
        deliveries_of.setdefault(delivery.certificate_id, []).append(delivery)
    events = list(AuditEvent.objects.filter(pk__in=audit_events).order_by("pk"))
    written = dict.fromkeys(
        ("users", "professionals", "requests", "certificates", "deliveries", "ocsp", "audit"), 0
    )
    tag = secrets.token_hex(4)
    done = 0
    while done < count:
        chunk = [templates[(done + i) % len(templates)] for i in range(min(_BATCH, count - done))]
        with transaction.atomic():
            users = user_model.objects.bulk_create(
                [
                    user_model(username=f"g{tag}-{done + i}", password=t.professional.user.password)
                    for i, t in enumerate(chunk)
                ]
            )
            professionals = Professional.objects.bulk_create(
                [
                    Professional(
                        user=user,
                        oidc_subject=f"g{tag}-{done + i}",
                        professional_id=f"G{tag}-{done + i:06d}",
                        given_name=t.professional.given_name,
                        family_name=t.professional.family_name,
                        email=f"g{tag}.{done + i}@cabinet.lu",
                        language=t.professional.language,
                    )
                    for i, (t, user) in enumerate(zip(chunk, users, strict=True))
                ]
            )
            requests = CertificateRequest.objects.bulk_create(
                [
                    _copy(t, professional=p, completed_at=t.completed_at)
                    for t, p in zip(chunk, professionals, strict=True)
                ]
            )
            certificates = Certificate.objects.bulk_create(
                [
                    _copy(
                        t.certificate,
                        request=r,
                        professional=p,
                        serial=_fresh(t.certificate.serial),
                        fingerprint_sha256=_fresh(t.certificate.fingerprint_sha256),
                        proof_digest=_fresh(t.certificate.proof_digest),
                    )
                    for t, r, p in zip(chunk, requests, professionals, strict=True)
                ]
            )
            # Deliveries in two steps: those that follow another (``after``) point at
            # the copy of the one they followed.
            copies: dict[tuple[int | None, int], Delivery] = {}
            for step_first in (True, False):
                batch: list[tuple[int, Delivery]] = []
                for t, certificate in zip(chunk, certificates, strict=True):
                    for delivery in deliveries_of.get(t.certificate.pk, []):
                        if (delivery.after_id is None) != step_first:
                            continue
                        clone = _copy(
                            delivery,
                            certificate=certificate,
                            message_id=_message_id(delivery.message_id),
                            key=_fresh(delivery.key),
                            after=copies.get(id_of(delivery.after_id, certificate)),
                        )
                        batch.append((delivery.pk, clone))
                made = Delivery.objects.bulk_create([clone for _, clone in batch])
                for (template_pk, _), clone in zip(batch, made, strict=True):
                    copies[id_of(template_pk, clone.certificate)] = clone
                written["deliveries"] += len(made)
            answers = [
                _copy(t.certificate.ocsp_response, certificate=c)
                for t, c in zip(chunk, certificates, strict=True)
                if hasattr(t.certificate, "ocsp_response")
            ]
            OcspResponse.objects.bulk_create(answers)
            # The audit events, chained onto the head.
            wanted = round(len(events) * (done + len(chunk)) / len(templates)) - round(
                len(events) * done / len(templates)
            )
            head = AuditEvent.objects.order_by("-pk").first()
            previous = head.hash if head else "0" * 64
            scheme = head.hash_scheme if head else AuditEvent.HashScheme.SHA256
            key = settings.MYCERT_AUDIT_KEY.encode() if scheme == SCHEME_HMAC else None
            now = timezone.now().replace(microsecond=0)
            chained = []
            for index in range(wanted):
                event = events[(round(len(events) * done / len(templates)) + index) % len(events)]
                fields: dict[str, Any] = {
                    "created_at": now,
                    "actor": event.actor,
                    "action": event.action,
                    "object_type": event.object_type,
                    "object_id": event.object_id,
                    "details": event.details,
                }
                digest = event_hash(previous_hash=previous, scheme=scheme, key=key, **fields)
                chained.append(
                    AuditEvent(previous_hash=previous, hash=digest, hash_scheme=scheme, **fields)
                )
                previous = digest
            AuditEvent.objects.bulk_create(chained)
        for name, rows in (
            ("users", users),
            ("professionals", professionals),
            ("requests", requests),
            ("certificates", certificates),
            ("ocsp", answers),
            ("audit", chained),
        ):
            written[name] += len(rows)
        done += len(chunk)
    # A database that grew over months has had its statistics refreshed by autovacuum
    # many times; after a bulk load they are stale until it next runs: refresh them now.
    from django.db import connection

    with connection.cursor() as cursor:
        for model in (
            user_model,
            Professional,
            CertificateRequest,
            Certificate,
            Delivery,
            OcspResponse,
            AuditEvent,
        ):
            cursor.execute(f"ANALYZE {connection.ops.quote_name(model._meta.db_table)}")
    return written


def settle_after_load() -> None:
    """VACUUM (ANALYZE) the loaded tables and CHECKPOINT, before the clock starts again.

    ``clone_issuances`` leaves tens of thousands of rows that nothing has read yet: no
    hint bits (each row's first reader looks its inserting transaction up and dirties the
    page), no visibility map, and their pages and WAL not yet written out. Autovacuum and
    the checkpointer would have settled them long ago in a database that grew over months
    (and autovacuum may be off on a benchmark machine); left as they are, the growth
    figure's second batch pays for the load. Outside any transaction (VACUUM cannot run
    in one); CHECKPOINT needs the superuser or pg_checkpoint role the benchmark has.
    """
    from django.contrib.auth import get_user_model
    from django.db import connection

    from mycert.models import (
        AuditEvent,
        Certificate,
        CertificateRequest,
        Delivery,
        OcspResponse,
        Professional,
    )

    with connection.cursor() as cursor:
        for model in (
            get_user_model(),
            Professional,
            CertificateRequest,
            Certificate,
            Delivery,
            OcspResponse,
            AuditEvent,
        ):
            cursor.execute(f"VACUUM (ANALYZE) {connection.ops.quote_name(model._meta.db_table)}")
        cursor.execute("CHECKPOINT")


def id_of(delivery_pk: int | None, certificate: Any) -> tuple[int | None, int]:
    """A key for "the copy of delivery ``delivery_pk`` made for ``certificate``"."""
    return (delivery_pk, id(certificate))


def _copy(instance: Any, **changes: Any) -> Any:
    """A new unsaved row with ``instance``'s column values, ``changes`` applied."""
    model = type(instance)
    values = {
        field.attname: getattr(instance, field.attname)
        for field in model._meta.concrete_fields
        if not field.primary_key
    }
    for name, value in changes.items():
        field = model._meta.get_field(name)
        values.pop(field.attname, None)
        values[name] = value
    return model(**values)

"""The transactional outbox: one ``Delivery`` row per e-mail (docs/architecture.md « Delivery: the
outbox »).

Rows are written in the issuer's transaction, so a certificate never exists without
its e-mails nor the reverse. Only row ids cross the broker; the keystore and the
password wait sealed (``mycert.sealing``) and are wiped once the relay accepted them.

Sending is at least once, not exactly once. A send is three steps:

1. *claim* — a short transaction locks the rows, counts the attempt and takes a lease
   (``next_attempt_at = now + lease``) so that a duplicate task or the sweep leaves them
   alone while this worker works;
2. *send* — outside any transaction, so no database lock is held during SMTP;
3. *record* — a second short transaction stores the outcome.

A crash between the relay's "250 OK" and step 3 leaves the row unsent; when the lease
ends the sweep sends it again, under the same ``Message-ID`` (RFC 5322 §3.6.4) so the
relay or the reader's client can recognise the duplicate. Losing a keystore e-mail
would be worse than a rare duplicate.

The steps take a certificate's due e-mails together: one claim, one relay session, one
record for the keystore and password e-mails of a certificate (and its vendor copy),
rather than three transactions per e-mail. The issuing worker has no claim to make: the
issuer's transaction writes the rows as a claim leaves them (attempt counted, lease
taken) and the worker sends them from memory (``deliveries_send(leased=…)``).

The outbox is a mechanism, not a workflow. It imports the models, the mail builders,
sealing and the audit trail, and no other service; it says what happened (``SendOutcome``:
"the professional's issuance e-mails of certificate N are all sent", "this vendor copy
failed for good") and the task layer decides what follows: closing the request,
superseding older certificates, telling the helpdesk. Closing the request is the one
step it hands in (``CompletionHook``): run inside the record's transaction, so that the
request is « sent » exactly when the professional's last e-mail is recorded, with one
transaction and one audit INSERT rather than two.

- ``mycert.outbox.rows``: writing, cancelling, wiping and re-queueing rows;
- ``mycert.outbox.content``: what an e-mail says, read while its row is locked;
- ``mycert.outbox.send``: claim → send → record.
"""

from mycert.outbox.rows import (
    deliveries_cancel_for_certificate,
    deliveries_due_ids,
    deliveries_enqueue_on_commit,
    deliveries_failure_unreported_ids,
    deliveries_wipe_failed,
    delivery_create_for_certificate,
    delivery_create_notice,
    delivery_retry,
)
from mycert.outbox.send import (
    BACKOFF_BASE,
    BACKOFF_CAP,
    CompletionHook,
    SendOutcome,
    SendResult,
    backoff_delay,
    deliveries_send,
    delivery_send,
)

__all__ = [
    "BACKOFF_BASE",
    "BACKOFF_CAP",
    "CompletionHook",
    "SendOutcome",
    "SendResult",
    "backoff_delay",
    "deliveries_cancel_for_certificate",
    "deliveries_due_ids",
    "deliveries_enqueue_on_commit",
    "deliveries_failure_unreported_ids",
    "deliveries_send",
    "deliveries_wipe_failed",
    "delivery_create_for_certificate",
    "delivery_create_notice",
    "delivery_retry",
    "delivery_send",
]

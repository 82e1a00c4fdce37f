"""The revoked certificates' own index, in the CRL digest's order (issue 24 §4).

PostgreSQL only. Each CRL publication has PostgreSQL hash the rows the CRL lists, in
the byte order of their serials (``mycert.services.publication._DIGEST_OF_LISTED``).
This partial index holds the revoked rows alone, keyed by the serial in the C
collation (the database's is not C), with the columns the digest reads: PostgreSQL
reads them in that order from the index alone, no sort and no table visit, and never
looks at the certificates that are not revoked.
"""

from django.db import migrations


def _create_crl_index(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(
        'CREATE INDEX certificate_crl_listed ON mycert_certificate ((serial COLLATE "C")) '
        "INCLUDE (not_after, revocation_reason, compromised_at) "
        "WHERE revoked_at IS NOT NULL"
    )


def _drop_crl_index(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("DROP INDEX IF EXISTS certificate_crl_listed")


class Migration(migrations.Migration):
    dependencies = [("mycert", "0018_crl_der_stored_uncompressed")]

    operations = [migrations.RunPython(_create_crl_index, _drop_crl_index)]

"""PostgreSQL stores each CRL's DER as is (issue 24 §4).

A CRL is mostly serial numbers and dates: pglz, PostgreSQL's default for large values,
shrinks it by about a third but costs ~6 ms on every 10,000-entry CRL stored (hourly
and after each revocation) and again on every read (the publication's digest of the
previous CRL, ``/pki/issuing.crl``). ``EXTERNAL`` keeps it out of line, uncompressed;
rows already stored stay as they are. Other databases have no such setting.
"""

from django.db import migrations


def _store_uncompressed(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE mycert_crl ALTER COLUMN der SET STORAGE EXTERNAL")


def _store_compressed(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE mycert_crl ALTER COLUMN der SET STORAGE EXTENDED")


class Migration(migrations.Migration):
    dependencies = [("mycert", "0017_ocsp_answers_of_expired_certificates")]

    operations = [migrations.RunPython(_store_uncompressed, _store_compressed)]

"""Indexes for the admin's certificate list and search at 100,000 certificates (issue 24 §5).

- the list's order (newest first, then primary key, as Django's changelist sorts it);
- PostgreSQL only: the search's trigram indexes (pg_trgm) on the professionals' names,
  identifier and e-mail, so a part of one is found without reading every row, and a
  pattern index on the serial for its beginning (the database's collation is not C).
  ``pg_trgm`` is a trusted extension (PostgreSQL ≥ 13): the owner of the database
  creates it; docs/deploy.md says what to do when ``migrate`` runs as another role.
"""

from django.db import migrations, models

_TRIGRAM_COLUMNS = ("family_name", "given_name", "professional_id", "email")


def _create_search_indexes(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    for column in _TRIGRAM_COLUMNS:
        # The expression Django's icontains compares: UPPER("column"::text) LIKE UPPER(…).
        schema_editor.execute(
            f"CREATE INDEX professional_{column}_trgm ON mycert_professional "
            f"USING gin (upper({column}::text) gin_trgm_ops)"
        )
    schema_editor.execute(
        "CREATE INDEX certificate_serial_prefix ON mycert_certificate "
        "(serial varchar_pattern_ops)"
    )


def _drop_search_indexes(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor != "postgresql":
        return
    for column in _TRIGRAM_COLUMNS:
        schema_editor.execute(f"DROP INDEX IF EXISTS professional_{column}_trgm")
    schema_editor.execute("DROP INDEX IF EXISTS certificate_serial_prefix")


class Migration(migrations.Migration):
    dependencies = [("mycert", "0015_event_and_alert_names")]

    operations = [
        migrations.AddIndex(
            model_name="certificate",
            index=models.Index(fields=["issued_at", "id"], name="certificate_issued_idx"),
        ),
        migrations.RunPython(_create_search_indexes, _drop_search_indexes),
    ]

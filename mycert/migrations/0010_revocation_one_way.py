"""A revocation is one-way, in the database too (issue 20 §2, defence in depth).

PostgreSQL refuses, whoever asks, to clear or move a certificate's revocation date
(``revoked_at``) once set, and to delete a revoked certificate. The reason may still
change (RFC 5280 §5.3.1: a compromise found later raises it to keyCompromise).
The workers do not rely on it (they carry revocations forward from the CA-signed CRL,
``mycert.services.publication``): it stops the casual or scripted attacker, and a
database owner who drops it is still caught by the workers. On SQLite (development,
tests) this migration does nothing.
"""

from django.apps.registry import Apps
from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor

FUNCTION = "mycert_revocation_is_one_way"
TRIGGER = "mycert_revocation_one_way"

CREATE = f"""
CREATE OR REPLACE FUNCTION {FUNCTION}() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.revoked_at IS NOT NULL THEN
            RAISE EXCEPTION 'certificate % (serial %) is revoked: a revoked certificate is never deleted', OLD.id, OLD.serial
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        RETURN OLD;
    END IF;
    IF OLD.revoked_at IS NOT NULL AND NEW.revoked_at IS DISTINCT FROM OLD.revoked_at THEN
        RAISE EXCEPTION 'certificate % (serial %) is revoked: a revocation is one-way', OLD.id, OLD.serial
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS {TRIGGER} ON mycert_certificate;
CREATE TRIGGER {TRIGGER}
    BEFORE UPDATE OF revoked_at OR DELETE ON mycert_certificate
    FOR EACH ROW EXECUTE FUNCTION {FUNCTION}();
"""

DROP = f"""
DROP TRIGGER IF EXISTS {TRIGGER} ON mycert_certificate;
DROP FUNCTION IF EXISTS {FUNCTION}();
"""


def create_trigger(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:  # noqa: ARG001
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE, params=None)


def drop_trigger(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:  # noqa: ARG001
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, params=None)


class Migration(migrations.Migration):
    dependencies = [("mycert", "0009_request_proof")]

    operations = [migrations.RunPython(create_trigger, drop_trigger)]

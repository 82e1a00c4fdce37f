"""OCSP answers of certificates past their end leave the refresh's index (issue 24 §5).

Beat stops re-signing an answer once its certificate has ended; the answer stays (rows
are never deleted) and, marked ``certificate_expired``, leaves the partial index the
refresh reads, which otherwise would grow by every certificate that ever expired, and
the one the health probe reads for the nearest nextUpdate.
"""

from django.db import migrations, models
from django.db.models.functions import Now


def _mark_expired(apps, schema_editor):  # type: ignore[no-untyped-def]
    answers = apps.get_model("mycert", "OcspResponse")
    answers.objects.filter(certificate__not_after__lte=Now()).update(certificate_expired=True)


class Migration(migrations.Migration):
    dependencies = [("mycert", "0016_search_and_list_indexes")]

    operations = [
        migrations.AddField(
            model_name="ocspresponse",
            name="certificate_expired",
            field=models.BooleanField(
                default=False, editable=False, verbose_name="certificate expired"
            ),
        ),
        migrations.AddIndex(
            model_name="ocspresponse",
            index=models.Index(
                condition=models.Q(("certificate_expired", False)),
                fields=["this_update"],
                name="ocsp_live_this_update_idx",
            ),
        ),
        migrations.AddIndex(
            model_name="ocspresponse",
            index=models.Index(
                condition=models.Q(("certificate_expired", False)),
                fields=["next_update"],
                name="ocsp_live_next_update_idx",
            ),
        ),
        migrations.RunPython(_mark_expired, migrations.RunPython.noop),
    ]

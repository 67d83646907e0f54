"""An index holding each task's project and counters, so that a task-list page's totals read the index alone.

Every Data Manager page counts the tasks of its (filtered) project and sums their annotation and prediction
counters. Without this index PostgreSQL reads the whole task table for the sums: at 200,000 tasks that is most of
a page's database time (README, "Scale run"). The index changes no result; it is built CONCURRENTLY, so imports
and annotations go on while an existing table is indexed.
"""

from django.db import migrations

INDEX = "labelstack_task_project_totals"


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run inside a transaction
    # The migration that gave tasks their total_predictions counter (2022: every version the bundle deploys has it).
    dependencies = (("tasks", "0017_auto_20220330_1310"),)
    operations = (
        migrations.RunSQL(
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {INDEX} ON task (project_id)"
            " INCLUDE (total_annotations, total_predictions)",
            reverse_sql=f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}",
        ),
    )

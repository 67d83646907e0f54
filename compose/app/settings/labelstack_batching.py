"""Batch the per-task queries of Label Studio's task list and JSON export (a Django app; see labelstack_settings).

Label Studio 1.23 serializes each task's drafts and comment authors with one query each: a 100-task page of
the data manager costs ~240 queries, an export two per task. Every query is a round trip to PostgreSQL plus
Django's per-query work, which dominated both figures in `make bench`. This app loads those relations for a
whole page or export batch at once (`prefetch_related`), which is what Label Studio already does for the
tasks' annotations and predictions, and stops the export from building a Project per task. The output is
unchanged (tests/integration/test_batching.py compares it with Label Studio's own).

If a Label Studio upgrade renames what is adjusted here, the app logs a warning and changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.apps import AppConfig
from django.db.models import Manager, Model, QuerySet, prefetch_related_objects
from rest_framework.serializers import ListSerializer, Serializer

RELATED = ("drafts", "comment_authors")
log = logging.getLogger(__name__)


class BatchedListSerializer(ListSerializer):
    """A list serializer that loads RELATED for all of its tasks in one query each."""

    def to_representation(self, data: Iterable[Model]) -> list[dict[str, object]]:
        if isinstance(data, QuerySet):
            # The export joins each task's project (select_related), and every Project instance parses the label
            # config in __init__: a fifth of the export's time. The serializer reads the project of the first
            # task only (the other fields use project_id), so one lazy load per batch does the same work.
            data = data.select_related(None).prefetch_related(*RELATED)
        elif isinstance(data, list):
            prefetch_related_objects(data, *RELATED)
        return super().to_representation(data)


def own_drafts(self: Serializer, user: Model, drafts: Manager) -> list[Model]:
    """The requesting user's drafts, filtered from the prefetched ones (Label Studio filters in SQL, per task)."""
    return [draft for draft in drafts.all() if draft.user_id == user.id]


class BatchingConfig(AppConfig):
    name = "labelstack_batching"
    verbose_name = "labelstack: batched task-list and export queries"

    def ready(self) -> None:
        try:
            from data_export.serializers import BaseExportDataSerializer
            from data_manager.serializers import DataManagerTaskSerializer

            DataManagerTaskSerializer.get_drafts_queryset  # noqa: B018 - fail here, not on a request, if renamed
        except (ImportError, AttributeError) as exc:
            log.warning("labelstack_batching: Label Studio changed (%s); task lists and exports run unbatched", exc)
            return
        for serializer in (BaseExportDataSerializer, DataManagerTaskSerializer):
            serializer.Meta.list_serializer_class = BatchedListSerializer
        DataManagerTaskSerializer.get_drafts_queryset = own_drafts

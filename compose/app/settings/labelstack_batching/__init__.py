"""Batch the per-task queries of Label Studio's task list and JSON export (a Django app; see labelstack_settings).

Label Studio 1.23 serializes each task's drafts and comment authors with one query each: a 100-task page of
the data manager costs ~240 queries, an export two per task. Every query is a round trip to PostgreSQL plus
Django's per-query work, which dominated both figures in `make bench`. This app loads those relations for a
whole page or export batch at once (`prefetch_related`), which is what Label Studio already does for the
tasks' annotations and predictions, and stops the export from building a Project per task. Each page's task count
is taken in the same scan as its annotation and prediction totals, over an index that holds them (migrations/),
and the feature flags Label Studio's serializers ask about for every task are read once per page or batch.
The output is unchanged (tests/integration/test_batching.py compares it with Label Studio's own).

If a Label Studio upgrade renames what is adjusted here, the app logs a warning and changes nothing.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from types import ModuleType

from django.apps import AppConfig
from django.core.paginator import Paginator
from django.db.models import Count, Manager, Model, QuerySet, Sum, prefetch_related_objects
from django.db.models.expressions import Col
from django.db.models.functions import Coalesce
from django.db.models.sql.constants import LOUTER
from django.db.models.sql.query import Query
from rest_framework.pagination import BasePagination
from rest_framework.request import Request
from rest_framework.serializers import ListSerializer, Serializer

RELATED = ("drafts", "comment_authors")
# The modules whose serializers read Label Studio's feature flags per task and annotation (as `flag_set`).
FLAG_READERS = ("core.feature_flags", "tasks.serializers", "data_manager.serializers", "fsm.serializer_fields")
# (each imported flag_set by name; core.feature_flags is where the export's serializers look it up per call)
FLAG_PARAMETERS = ("feature_flag", "user", "override_system_default", "organization")
# Project.update_tasks_counters_and_task_states as Label Studio 1.23 calls it after an import.
COUNTERS_PARAMETERS = ("self", "tasks_queryset", "maximum_annotations_changed", "overlap_cohort_percentage_changed",
                       "tasks_number_changed", "from_scratch", "recalculate_stats_counts")  # fmt: skip
# TaskPagination.paginate_totals_queryset as Label Studio 1.23 defines it (the Data Manager's page totals).
TOTALS_PARAMETERS = ("self", "queryset", "request", "view")
log = logging.getLogger(__name__)


# The feature flags read while this thread serializes one list of tasks (flag, arguments -> value); unset outside.
_batch_flags = threading.local()


def flags_read_once_per_batch(original: Callable[..., bool]) -> Callable[..., bool]:
    """Label Studio's flag_set, answering each question once per serialized list: its serializers ask the same two
    flags for the same user for every task and annotation, each an evaluation by the LaunchDarkly client (a
    tenth of an export's time)."""

    @functools.wraps(original)
    def flag_set(*args: object, **kwargs: object) -> bool:
        memo = getattr(_batch_flags, "memo", None)
        if memo is None:  # outside a serialized list: as shipped, without building a key
            return original(*args, **kwargs)
        key = (args, tuple(sorted(kwargs.items())))
        try:
            return memo[key]
        except KeyError:
            memo[key] = value = original(*args, **kwargs)
            return value
        except TypeError:  # an argument that cannot be a dictionary key (none of Label Studio's)
            return original(*args, **kwargs)

    return flag_set


class BatchedListSerializer(ListSerializer):
    """A list serializer that loads RELATED for all of its tasks in one query each, and reads each feature flag
    once."""

    def to_representation(self, data: Iterable[Model]) -> list[dict[str, object]]:
        if isinstance(data, QuerySet):
            # The export joins each task's project (select_related), and every Project instance parses the label
            # config in __init__: a fifth of the export's time. The serializer reads the project of the first
            # task only (the other fields use project_id), so one lazy load per batch does the same work.
            data = data.select_related(None).prefetch_related(*RELATED)
        elif isinstance(data, list):
            prefetch_related_objects(data, *RELATED)
        outer = getattr(_batch_flags, "memo", None)
        _batch_flags.memo = {} if outer is None else outer
        try:
            return super().to_representation(data)
        finally:
            _batch_flags.memo = outer


def own_drafts(self: Serializer, user: Model, drafts: Manager) -> list[Model]:
    """The requesting user's drafts, filtered from the prefetched ones (Label Studio filters in SQL, per task)."""
    return [draft for draft in drafts.all() if draft.user_id == user.id]


def holds_its_own_counters(tasks: object, counts: Mapping[str, int] | None, task_model: type[Model]) -> bool:
    """True for the tasks of an import that created no annotation, each holding the counters Label Studio set when
    it built them (no annotations; total_predictions the number of predictions given with it), when the import
    created every one of those predictions: exactly what Label Studio's recount would write (nothing else can point
    at tasks created a moment ago)."""
    return (
        isinstance(tasks, list)
        and counts is not None
        and counts.get("annotation_count") == 0
        and all(isinstance(task, task_model) for task in tasks)
        and not any(task.total_annotations or task.cancelled_annotations for task in tasks)
        and sum(task.total_predictions for task in tasks) == counts.get("prediction_count")
    )


def skip_recount_of_unannotated_imports(
    original: Callable[..., object], task_model: type[Model]
) -> Callable[..., object]:
    """Label Studio's step with no tasks to recount when the imported ones already hold the right counters."""

    @functools.wraps(original)
    def update(self: Model, tasks_queryset: object, *args: object, **kwargs: object) -> object:
        counts = kwargs.get("recalculate_stats_counts")
        if holds_its_own_counters(tasks_queryset, counts if isinstance(counts, Mapping) else None, task_model):
            tasks_queryset = []
        return original(self, tasks_queryset, *args, **kwargs)

    return update


class CountedPaginator(Paginator):
    """Django's paginator given the count of its objects, taken in the scan that summed their counters."""

    def __init__(self, object_list: QuerySet, per_page: int, *, count: int) -> None:
        super().__init__(object_list, per_page)
        self.count = count  # Paginator.count is a cached_property: this is the value it would have cached


def reads_only(alias: str, node: object) -> bool:
    """True when a condition reads columns of `alias` alone, with no subquery or aggregate in it."""
    if isinstance(node, Col):
        return node.alias == alias
    if isinstance(node, Query) or getattr(node, "subquery", False) or getattr(node, "contains_aggregate", False):
        return False
    children = node.get_source_expressions() if hasattr(node, "get_source_expressions") else []
    return all(reads_only(alias, child) for child in children if child is not None)


def rows_without_grouping(queryset: QuerySet) -> QuerySet:
    """The same rows as `queryset` without the joins and GROUP BY that its aggregate annotations bring, when those
    annotations serve the ordering only; else `queryset` itself.

    A tab ordered by prediction score annotates each task with an aggregate of its predictions: the totals of the
    page then come from a subquery joining every task of the project with its predictions and grouping them again
    (351 ms at 200,000 tasks, against 26 ms without). Those rows are the tasks that pass the WHERE clause, once
    each, when the WHERE reads the task table alone and every join is a LEFT OUTER one (it keeps every task; the
    grouping by task merges what the join multiplied): the same rows as the WHERE clause on the task table alone.
    """
    query = queryset.query
    base = query.base_table
    joins = [join for alias, join in query.alias_map.items() if alias != base and query.alias_refcount[alias]]
    if (
        not any(getattr(annotation, "contains_aggregate", False) for annotation in query.annotations.values())
        or isinstance(query.group_by, tuple)
        or query.distinct
        or query.combinator
        or query.is_sliced
        or query.extra
        or query.extra_tables
        or any(join.join_type != LOUTER for join in joins)
        or not reads_only(base, query.where)
    ):
        return queryset
    rows = queryset.model._base_manager.all()
    rows.query.where = query.where.clone()
    return rows


def totals_in_one_scan(pagination_class: type[BasePagination]) -> Callable[..., object]:
    """Label Studio's page totals (annotations and predictions summed over the filtered tasks) with the tasks'
    count in the same query: Label Studio counts them in a second scan (Django's paginator), and at 200,000
    tasks each scan is a large part of a page's time."""

    def paginate_totals_queryset(
        self: BasePagination, queryset: QuerySet, request: Request, view: object = None
    ) -> object:
        totals = (
            rows_without_grouping(queryset)
            .values("id")
            .aggregate(
                count=Count("*"),
                total_annotations=Coalesce(Sum("total_annotations"), 0),
                total_predictions=Coalesce(Sum("total_predictions"), 0),
            )
        )
        self.total_annotations = totals["total_annotations"]
        self.total_predictions = totals["total_predictions"]
        self.django_paginator_class = functools.partial(CountedPaginator, count=totals["count"])
        return super(pagination_class, self).paginate_queryset(queryset.only("id"), request, view)

    return paginate_totals_queryset


def replace_unless_changed(
    owner: type | ModuleType,
    name: str,
    parameters: tuple[str, ...],
    wrap: Callable[[Callable[..., object]], object],
    left: str,
) -> None:
    """owner.<name> replaced by wrap(original) while Label Studio still defines it with `parameters`; otherwise a
    warning that what it adjusts (`left`) runs as shipped."""
    original = getattr(owner, name, None)
    if original is None or tuple(inspect.signature(original).parameters) != parameters:
        log.warning("labelstack_batching: Label Studio changed %s.%s; %s as shipped", owner.__name__, name, left)
        return
    setattr(owner, name, wrap(original))


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
        self.read_flags_once_per_batch()
        self.skip_recount_of_unannotated_imports()
        self.count_pages_in_one_scan()

    @staticmethod
    def skip_recount_of_unannotated_imports() -> None:
        from projects.models import Project
        from tasks.models import Task

        replace_unless_changed(
            Project,
            "update_tasks_counters_and_task_states",
            COUNTERS_PARAMETERS,
            lambda original: skip_recount_of_unannotated_imports(original, Task),
            "imports run",
        )

    @staticmethod
    def count_pages_in_one_scan() -> None:
        from data_manager.api import TaskPagination

        replace_unless_changed(
            TaskPagination,
            "paginate_totals_queryset",
            TOTALS_PARAMETERS,
            lambda _original: totals_in_one_scan(TaskPagination),
            "pages count",
        )

    @staticmethod
    def read_flags_once_per_batch() -> None:
        for name in FLAG_READERS:
            try:
                module = importlib.import_module(name)
            except ImportError:  # a module this Label Studio version does not have
                continue
            replace_unless_changed(module, "flag_set", FLAG_PARAMETERS, flags_read_once_per_batch, "flags are read")
